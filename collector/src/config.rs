//! Collector configuration: flags and environment variables over `collector.toml` over defaults.
//! Every key is documented in `collector.example.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6100";
pub use stormwatch_model::limits::{DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_DECOMPRESSED_BYTES};

/// Command-line flags; each has an environment variable.
#[derive(Debug, Default, clap::Parser)]
#[command(
    name = "stormwatch-collector",
    version,
    about = "Stormwatch collector: ingest, storage, read API and dashboard"
)]
pub struct Flags {
    /// Address to listen on.
    #[arg(long, env = "STORMWATCH_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// PostgreSQL URL. Without one, the collector runs its own cluster in the data directory.
    #[arg(long, env = "STORMWATCH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Data directory (the embedded PostgreSQL cluster, the generated ingest token).
    #[arg(long, env = "STORMWATCH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML config file.
    #[arg(long, env = "STORMWATCH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Agent tokens accepted by the ingest API, comma-separated.
    #[arg(
        long,
        env = "STORMWATCH_INGEST_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub ingest_tokens: Option<Vec<String>>,
    /// Days of spans and aggregates kept.
    #[arg(long, env = "STORMWATCH_RETENTION_DAYS")]
    pub retention_days: Option<u32>,
    /// Serve the dashboard and read API without sign-in on a non-loopback address.
    #[arg(long, env = "STORMWATCH_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Bearer tokens for the read API (`/api/v1/*` except ingest), comma-separated.
    #[arg(
        long,
        env = "STORMWATCH_READ_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub read_tokens: Option<Vec<String>>,
    /// Read a password on standard input, print its argon2 hash for `[[users]]`, and exit.
    #[arg(long)]
    pub hash_password: bool,
}

/// The `collector.toml` file. Unknown keys are errors, so a typo never passes silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub database_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub ingest_tokens: Option<Vec<String>>,
    pub retention_days: Option<u32>,
    pub max_body_bytes: Option<usize>,
    pub max_decompressed_bytes: Option<usize>,
    pub max_db_connections: Option<usize>,
    /// Dashboard users (`[[users]]`); none: the dashboard is open, on loopback only.
    pub users: Option<Vec<UserConfig>>,
    /// Bearer tokens for the read API.
    pub read_tokens: Option<Vec<String>>,
    /// Allow a non-loopback listen address without users.
    pub insecure_no_auth: Option<bool>,
    /// Mark the session cookie `Secure` (the collector is behind TLS).
    pub secure_cookies: Option<bool>,
    /// `[alerts]`: rules, channels, silences (hot-reloaded).
    pub alerts: Option<crate::alerts::config::AlertsConfig>,
}

/// One dashboard user. Unknown keys are errors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// argon2 PHC string, from `stormwatch-collector --hash-password`.
    pub password_hash: String,
    /// `admin` or `viewer` (read-only, the default).
    #[serde(default = "viewer_role")]
    pub role: stormwatch_web::Role,
}

fn viewer_role() -> stormwatch_web::Role {
    stormwatch_web::Role::Viewer
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `None`: run the embedded PostgreSQL in `data_dir`.
    pub database_url: Option<String>,
    pub data_dir: PathBuf,
    pub ingest_tokens: Vec<String>,
    pub retention_days: u32,
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub max_db_connections: usize,
    pub users: Vec<UserConfig>,
    pub read_tokens: Vec<String>,
    pub insecure_no_auth: bool,
    pub secure_cookies: bool,
    pub alerts: crate::alerts::config::AlertsConfig,
    /// The config file, watched for changes to `[alerts]`.
    pub config_path: Option<PathBuf>,
}

/// A configuration that cannot be used; the message names the file, line and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0}")]
    Value(String),
}

/// Parses a config file's text; errors carry the line and key (`toml`'s spans).
pub fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| {
            text.as_bytes()[..s.start.min(text.len())]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1
        });
        let message = match line {
            Some(l) => format!("line {l}: {}", e.message()),
            None => e.message().to_owned(),
        };
        ConfigError::Invalid {
            path: path.to_owned(),
            message,
        }
    })
}

impl Config {
    /// Combines flags, the config file they name (if any) and defaults.
    pub fn load(flags: Flags) -> Result<Config, ConfigError> {
        let file = match &flags.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                parse_file(path, &text)?
            }
            None => FileConfig::default(),
        };
        let database_url = flags
            .database_url
            .or(file.database_url)
            .filter(|u| !u.trim().is_empty());
        let tokens: Vec<String> = flags
            .ingest_tokens
            .or(file.ingest_tokens)
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        if let Some(short) = tokens.iter().find(|t| t.len() < 16) {
            return Err(ConfigError::Value(format!(
                "ingest token `{}…` is shorter than 16 characters; use a long random token (e.g. `openssl rand -hex 24`)",
                &short[..short.len().min(4)]
            )));
        }
        let config = Config {
            listen: flags
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default")),
            database_url,
            data_dir: flags
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./stormwatch-data")),
            ingest_tokens: tokens,
            retention_days: flags.retention_days.or(file.retention_days).unwrap_or(7),
            max_body_bytes: file.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
            max_decompressed_bytes: file
                .max_decompressed_bytes
                .unwrap_or(DEFAULT_MAX_DECOMPRESSED_BYTES),
            max_db_connections: file.max_db_connections.unwrap_or(16),
            users: file.users.unwrap_or_default(),
            read_tokens: flags
                .read_tokens
                .or(file.read_tokens)
                .unwrap_or_default()
                .into_iter()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect(),
            insecure_no_auth: flags.insecure_no_auth || file.insecure_no_auth.unwrap_or(false),
            secure_cookies: file.secure_cookies.unwrap_or(false),
            alerts: file.alerts.unwrap_or_default(),
            config_path: flags.config.clone(),
        };
        if config.retention_days == 0 {
            return Err(ConfigError::Value(
                "retention_days must be at least 1".into(),
            ));
        }
        config.check_access()?;
        // Rules and channels as start-up will resolve them (secrets from the environment): a
        // channel whose variable is missing is an unusable config, exit 64 like the rest.
        let dashboard = format!("http://{}", config.listen);
        if let Err(e) = config
            .alerts
            .resolve(&dashboard, &|k| std::env::var(k).ok())
        {
            return Err(match &config.config_path {
                Some(path) => ConfigError::Invalid {
                    path: path.clone(),
                    message: format!("[alerts]: {e}"),
                },
                None => ConfigError::Value(format!("[alerts]: {e}")),
            });
        }
        Ok(config)
    }

    /// Defaults for tests and embedding: loopback port 0, the given database and token.
    pub fn for_tests(database_url: &str, token: &str) -> Config {
        Config {
            listen: "127.0.0.1:0".parse().expect("valid"),
            database_url: Some(database_url.to_owned()),
            data_dir: PathBuf::from("./stormwatch-data"),
            ingest_tokens: vec![token.to_owned()],
            retention_days: 7,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_decompressed_bytes: DEFAULT_MAX_DECOMPRESSED_BYTES,
            max_db_connections: 8,
            users: Vec::new(),
            read_tokens: Vec::new(),
            insecure_no_auth: false,
            secure_cookies: false,
            alerts: crate::alerts::config::AlertsConfig {
                default_rules: false,
                ..Default::default()
            },
            config_path: None,
        }
    }
}

impl Config {
    /// Refuses an open dashboard on a non-loopback address (unless `insecure_no_auth`), bad
    /// password hashes, duplicate users and short read tokens.
    pub fn check_access(&self) -> Result<(), ConfigError> {
        if self.users.is_empty() && !self.listen.ip().is_loopback() && !self.insecure_no_auth {
            return Err(ConfigError::Value(format!(
                "listening on {} without dashboard users would expose the dashboard and read API to the network: \
                 add [[users]] to the config (hash passwords with `stormwatch-collector --hash-password`), \
                 listen on 127.0.0.1, or pass --insecure-no-auth",
                self.listen
            )));
        }
        for (i, u) in self.users.iter().enumerate() {
            stormwatch_web::auth::check_hash(&u.password_hash).map_err(|e| {
                ConfigError::Value(format!("users[{i}] `{}`: password_hash is {e}", u.name))
            })?;
            if self.users[..i].iter().any(|o| o.name == u.name) {
                return Err(ConfigError::Value(format!(
                    "users[{i}]: user `{}` is listed twice",
                    u.name
                )));
            }
        }
        if let Some(short) = self.read_tokens.iter().find(|t| t.len() < 16) {
            return Err(ConfigError::Value(format!(
                "read token `{}…` is shorter than 16 characters; use a long random token (e.g. `openssl rand -hex 24`)",
                &short[..short.len().min(4)]
            )));
        }
        Ok(())
    }

    /// The dashboard's access settings.
    pub fn auth_options(&self) -> stormwatch_web::AuthOptions {
        stormwatch_web::AuthOptions {
            users: self
                .users
                .iter()
                .map(|u| stormwatch_web::User {
                    name: u.name.clone(),
                    password_hash: u.password_hash.clone(),
                    role: u.role,
                })
                .collect(),
            read_tokens: self.read_tokens.clone(),
            secure_cookies: self.secure_cookies,
        }
    }
}

/// `--hash-password`: reads one line from standard input and prints its argon2 hash.
/// Returns the process exit code.
pub fn print_password_hash() -> i32 {
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err()
        || line.trim_end_matches(['\r', '\n']).is_empty()
    {
        eprintln!("type the password on standard input (e.g. `read -rs p; echo \"$p\" | stormwatch-collector --hash-password`)");
        return 64;
    }
    match stormwatch_web::auth::hash_password(line.trim_end_matches(['\r', '\n'])) {
        Ok(h) => {
            println!("{h}");
            0
        }
        Err(e) => {
            eprintln!("hashing failed: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = "listen = \"127.0.0.1:7000\"\n\nretention_dayz = 3\n";
        let err = parse_file(Path::new("collector.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("config collector.toml: line 3:"), "{err}");
        assert!(err.contains("retention_dayz"), "{err}");
    }

    #[test]
    fn wrong_type_is_reported() {
        let err = parse_file(Path::new("c.toml"), "retention_days = \"ten\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 1") && err.contains("retention_days")
                || err.contains("invalid type"),
            "{err}"
        );
    }

    #[test]
    fn short_tokens_are_refused() {
        let flags = Flags {
            ingest_tokens: Some(vec!["abc".into()]),
            ..Default::default()
        };
        assert!(Config::load(flags)
            .unwrap_err()
            .to_string()
            .contains("shorter than 16"));
    }

    #[test]
    fn open_dashboard_only_on_loopback_unless_insecure() {
        let flags = |listen: &str, insecure: bool| Flags {
            listen: Some(listen.parse().unwrap()),
            insecure_no_auth: insecure,
            ..Default::default()
        };
        assert!(Config::load(flags("127.0.0.1:6100", false)).is_ok());
        let err = Config::load(flags("0.0.0.0:6100", false))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--insecure-no-auth") && err.contains("0.0.0.0:6100"),
            "{err}"
        );
        assert!(Config::load(flags("0.0.0.0:6100", true)).is_ok());
    }

    #[test]
    fn users_need_argon2_hashes() {
        let text =
            "listen = \"0.0.0.0:6100\"\n[[users]]\nname = \"ana\"\npassword_hash = \"hunter2\"\n";
        let file = parse_file(Path::new("c.toml"), text).unwrap();
        assert_eq!(
            file.users.as_ref().unwrap()[0].role,
            stormwatch_web::Role::Viewer
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let err = Config::load(Flags {
            config: Some(path.clone()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("users[0] `ana`: password_hash"), "{err}");
        let hash = stormwatch_web::auth::hash_password("pw").unwrap();
        std::fs::write(&path, text.replace("hunter2", &hash)).unwrap();
        let config = Config::load(Flags {
            config: Some(path),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(config.auth_options().users.len(), 1);
    }

    #[test]
    fn the_example_config_parses() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../collector.example.toml"
        ));
        parse_file(path, &std::fs::read_to_string(path).unwrap()).unwrap();
    }
}
