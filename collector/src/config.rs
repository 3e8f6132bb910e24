//! The collector's configuration: `collector.toml`, environment and flags, validated in one
//! place, built like the agent's (`agent/src/config.rs`).
//!
//! Precedence: flag > environment variable > file > default. Every key is documented on its
//! field here and in `collector.example.toml` (keep the two in step); unknown keys are errors.
//! Start-up and reload ([`crate::reload`]) both go through [`load`], so a file that would not
//! start the collector is never accepted by a reload either; errors name file, line and key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::alerts::config::AlertsConfig;

/// Default of `listen`: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6100";
/// Default of `data_dir`.
pub const DEFAULT_DATA_DIR: &str = "./stormwatch-data";
/// Default of `retention_days`.
pub const DEFAULT_RETENTION_DAYS: u32 = 7;
/// Default of `max_db_connections`.
pub const DEFAULT_MAX_DB_CONNECTIONS: usize = 16;
/// Smallest `embedded_shared_buffers_mib` accepted.
pub const MIN_SHARED_BUFFERS_MIB: u64 = 16;
/// Shortest ingest or read token accepted: tokens are secrets, guessable ones are refused.
pub const MIN_TOKEN_CHARS: usize = 16;
pub use stormwatch_model::limits::{DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_DECOMPRESSED_BYTES};

/// Command-line flags; each has an environment variable, and each overrides the file.
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
    /// TOML config file (watched: edits apply live; so does SIGHUP).
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
    /// PEM certificate chain to serve HTTPS with (with --tls-key).
    #[arg(long, env = "STORMWATCH_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "STORMWATCH_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (tokens and passwords in clear).
    #[arg(long, env = "STORMWATCH_INSECURE_NO_TLS")]
    pub insecure_no_tls: bool,
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

/// Values from flags and environment; each overrides the file. Kept with the config, so a
/// reload applies them again.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub database_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub ingest_tokens: Option<Vec<String>>,
    pub retention_days: Option<u32>,
    /// `true` forces `insecure_no_auth`; `false` leaves the file's value.
    pub insecure_no_auth: bool,
    pub read_tokens: Option<Vec<String>>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// `true` forces `insecure_no_tls`; `false` leaves the file's value.
    pub insecure_no_tls: bool,
}

impl Flags {
    /// The flags that override the file.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen,
            database_url: self.database_url.clone(),
            data_dir: self.data_dir.clone(),
            ingest_tokens: self.ingest_tokens.clone(),
            retention_days: self.retention_days,
            insecure_no_auth: self.insecure_no_auth,
            read_tokens: self.read_tokens.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            insecure_no_tls: self.insecure_no_tls,
        }
    }
}

/// The whole configuration: the `collector.toml` file, and after [`load`] the effective
/// configuration (flags applied, validated).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the ingest API, read API and dashboard. Needs a restart.
    pub listen: SocketAddr,
    /// PostgreSQL URL or libpq string; `None` (or empty): run the embedded PostgreSQL in
    /// `data_dir`. Needs a restart.
    pub database_url: Option<String>,
    /// Where the embedded cluster and the generated ingest token live. Needs a restart.
    pub data_dir: PathBuf,
    /// Bearer tokens agents present to the ingest API, at least [`MIN_TOKEN_CHARS`] each;
    /// none: one is generated into `<data_dir>/ingest-token`. Applies live.
    pub ingest_tokens: Vec<String>,
    /// Days of spans and aggregates kept. Needs a restart (the store holds it).
    pub retention_days: u32,
    /// Largest request body as sent (compressed), bytes. Applies live.
    pub max_body_bytes: usize,
    /// Largest request body after decompression, bytes. Applies live.
    pub max_decompressed_bytes: usize,
    /// Connections in the pool to PostgreSQL. Needs a restart.
    pub max_db_connections: usize,
    /// `shared_buffers` of the embedded PostgreSQL, MiB; `None`: a quarter of the memory
    /// (`stormwatch_store::embedded::default_shared_buffers_mib`). Ignored with
    /// `database_url`. Needs a restart.
    pub embedded_shared_buffers_mib: Option<u64>,
    /// Dashboard users (`[[users]]`); none: the dashboard is open, on loopback only.
    /// Applies live (a removed user is signed out, a changed role applies at once).
    pub users: Vec<UserConfig>,
    /// Bearer tokens for the read API, at least [`MIN_TOKEN_CHARS`] each. Applies live.
    pub read_tokens: Vec<String>,
    /// Allow a non-loopback listen address without users.
    pub insecure_no_auth: bool,
    /// Mark the session cookie `Secure` (the collector is behind TLS). Applies live; on by
    /// itself when the collector serves HTTPS.
    pub secure_cookies: bool,
    /// PEM certificate chain (server certificate first) to serve HTTPS with; with `tls_key`.
    /// Renewed files are picked up within 10 s, without a restart. Setting it needs a restart.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: when set, clients (agents, browsers) must present a certificate
    /// one of them signed (mutual TLS). Needs `tls_cert`.
    pub tls_client_ca: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback address: agent tokens and dashboard passwords
    /// would cross the network in clear. For a TLS-terminating proxy on another host.
    pub insecure_no_tls: bool,
    /// `[alerts]`: rules, channels, silences. Applies live.
    pub alerts: AlertsConfig,
    /// The config file, watched for changes. Not a key of the file.
    #[serde(skip)]
    pub config_path: Option<PathBuf>,
    /// The flags applied over the file, applied again by a reload. Not a key of the file.
    #[serde(skip)]
    pub overrides: Overrides,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.parse().expect("valid default"),
            database_url: None,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            ingest_tokens: Vec::new(),
            retention_days: DEFAULT_RETENTION_DAYS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_decompressed_bytes: DEFAULT_MAX_DECOMPRESSED_BYTES,
            max_db_connections: DEFAULT_MAX_DB_CONNECTIONS,
            embedded_shared_buffers_mib: None,
            users: Vec::new(),
            read_tokens: Vec::new(),
            insecure_no_auth: false,
            secure_cookies: false,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            insecure_no_tls: false,
            alerts: AlertsConfig::default(),
            config_path: None,
            overrides: Overrides::default(),
        }
    }
}

/// One dashboard user. Unknown keys are errors.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The sign-in name; unique.
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

/// A configuration that cannot be used. The message names the file (`(flags)` when there is
/// none), the line when it is known, and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or has the wrong type.
    #[error("config {path}: {}{message}", line_prefix(*line))]
    Parse {
        path: String,
        line: Option<usize>,
        message: String,
    },
    /// A value is well-formed but not allowed; `message` names the key.
    #[error("config {path}: {}{message}", line_prefix(*line))]
    Invalid {
        path: String,
        line: Option<usize>,
        key: String,
        message: String,
    },
}

fn line_prefix(line: Option<usize>) -> String {
    line.map(|l| format!("line {l}: ")).unwrap_or_default()
}

/// Parses a config file's text; errors carry the line and key (`toml`'s spans).
pub fn parse_file(path: &Path, text: &str) -> Result<Config, ConfigError> {
    toml::from_str(text).map_err(|e: toml::de::Error| ConfigError::Parse {
        path: path.display().to_string(),
        line: e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1),
        message: e.message().trim().to_owned(),
    })
}

/// Reads `path` (if any), applies `overrides`, validates: start-up and reload alike.
pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
    let (mut config, text, shown) = match path {
        Some(p) => {
            let shown = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: shown.clone(),
                source,
            })?;
            (parse_file(p, &text)?, text, shown)
        }
        None => (Config::default(), String::new(), "(flags)".to_owned()),
    };
    let o = overrides.clone();
    config.listen = o.listen.unwrap_or(config.listen);
    if o.database_url.is_some() {
        config.database_url = o.database_url;
    }
    config.database_url = config.database_url.filter(|u| !u.trim().is_empty());
    config.data_dir = o.data_dir.unwrap_or(config.data_dir);
    config.ingest_tokens = trimmed(o.ingest_tokens.unwrap_or(config.ingest_tokens));
    config.retention_days = o.retention_days.unwrap_or(config.retention_days);
    config.insecure_no_auth |= o.insecure_no_auth;
    config.read_tokens = trimmed(o.read_tokens.unwrap_or(config.read_tokens));
    if o.tls_cert.is_some() {
        config.tls_cert = o.tls_cert;
    }
    if o.tls_key.is_some() {
        config.tls_key = o.tls_key;
    }
    config.insecure_no_tls |= o.insecure_no_tls;
    config.config_path = path.map(Path::to_owned);
    config.overrides = overrides.clone();
    config
        .validate()
        .map_err(|(key, message)| ConfigError::Invalid {
            line: line_of_key(&text, &key).or_else(|| line_of_alerts_error(&text, &key, &message)),
            path: shown,
            key,
            message,
        })?;
    Ok(config)
}

/// Tokens without surrounding blanks, empty ones left out (a trailing comma in a variable).
fn trimmed(tokens: Vec<String>) -> Vec<String> {
    tokens
        .into_iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The line where the last segment of a dotted key is assigned, for error messages;
/// `users[2].name` is searched from the third `[[users]]` header on.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let leaf = key.rsplit('.').next()?.split('[').next()?;
    let skip = match key.split_once('[') {
        Some((table, rest)) => {
            let n: usize = rest.split(']').next()?.parse().ok()?;
            let header = format!("[[{table}]]");
            text.lines()
                .enumerate()
                .filter(|(_, l)| l.trim() == header)
                .nth(n)
                .map(|(i, _)| i)?
        }
        None => 0,
    };
    text.lines()
        .enumerate()
        .skip(skip)
        .find(|(_, l)| {
            l.trim_start()
                .strip_prefix(leaf)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|(i, _)| i + 1)
}

/// For an `[alerts]` error naming a rule or channel (`rule `x`: ...`), the line of its
/// `name = "x"`; else the line of the `[alerts]` header.
fn line_of_alerts_error(text: &str, key: &str, message: &str) -> Option<usize> {
    if key != "alerts" {
        return None;
    }
    let named = ["rule `", "channel `"].iter().find_map(|p| {
        let rest = &message[message.find(p)? + p.len()..];
        rest.split('`').next()
    });
    let line =
        |want: &dyn Fn(&str) -> bool| text.lines().position(|l| want(l.trim())).map(|i| i + 1);
    named
        .and_then(|n| {
            line(&|l: &str| {
                l.strip_prefix("name")
                    .and_then(|r| r.trim_start().strip_prefix('='))
                    .is_some_and(|v| v.trim().trim_matches(['"', '\'']) == n)
            })
        })
        .or_else(|| line(&|l: &str| l == "[alerts]"))
}

impl Config {
    /// Combines flags, the config file they name (if any) and defaults.
    pub fn load(flags: Flags) -> Result<Config, ConfigError> {
        load(flags.config.as_deref(), &flags.overrides())
    }

    /// Checks what serde cannot: `(key, message)`, the message naming the key.
    fn validate(&self) -> Result<(), (String, String)> {
        if let Some(short) = self
            .ingest_tokens
            .iter()
            .find(|t| t.len() < MIN_TOKEN_CHARS)
        {
            return Err((
                "ingest_tokens".into(),
                format!(
                    "ingest token `{}…` is shorter than {MIN_TOKEN_CHARS} characters; use a long random token (e.g. `openssl rand -hex 24`)",
                    &short[..short.len().min(4)]
                ),
            ));
        }
        if self.retention_days == 0 {
            return Err((
                "retention_days".into(),
                "retention_days must be at least 1".into(),
            ));
        }
        if self
            .embedded_shared_buffers_mib
            .is_some_and(|m| m < MIN_SHARED_BUFFERS_MIB)
        {
            return Err((
                "embedded_shared_buffers_mib".into(),
                format!("embedded_shared_buffers_mib must be at least {MIN_SHARED_BUFFERS_MIB} (MiB); leave it out for a quarter of the memory"),
            ));
        }
        self.check_access()?;
        // Rules and channels as start-up will resolve them (secrets from the environment): a
        // channel whose variable is missing is an unusable config, exit 64 like the rest.
        self.resolve_alerts()
            .map_err(|e| ("alerts".to_owned(), format!("[alerts]: {e}")))?;
        Ok(())
    }

    /// The alert rules and channels, checked, with secrets from the environment.
    pub fn resolve_alerts(&self) -> Result<crate::alerts::config::Resolved, String> {
        self.alerts
            .resolve(&format!("http://{}", self.listen), &|k| {
                std::env::var(k).ok()
            })
    }

    /// Defaults for tests and embedding: loopback port 0, the given database and token.
    pub fn for_tests(database_url: &str, token: &str) -> Config {
        Config {
            listen: "127.0.0.1:0".parse().expect("valid"),
            database_url: Some(database_url.to_owned()),
            ingest_tokens: vec![token.to_owned()],
            max_db_connections: 8,
            alerts: AlertsConfig {
                default_rules: false,
                ..Default::default()
            },
            ..Config::default()
        }
    }

    /// Refuses plain HTTP on a non-loopback address (unless `insecure_no_tls`), half a TLS
    /// key pair, an open dashboard on a non-loopback address (unless `insecure_no_auth`), bad
    /// password hashes, duplicate users and short read tokens: `(key, message)`.
    fn check_access(&self) -> Result<(), (String, String)> {
        if self.users.is_empty() && !self.listen.ip().is_loopback() && !self.insecure_no_auth {
            return Err(("listen".into(), format!(
                "listening on {} without dashboard users would expose the dashboard and read API to the network: \
                 add [[users]] to the config (hash passwords with `stormwatch-collector --hash-password`), \
                 listen on 127.0.0.1, or pass --insecure-no-auth",
                self.listen
            )));
        }
        for (i, u) in self.users.iter().enumerate() {
            stormwatch_web::auth::check_hash(&u.password_hash).map_err(|e| {
                (
                    format!("users[{i}].password_hash"),
                    format!("users[{i}] `{}`: password_hash is {e}", u.name),
                )
            })?;
            if self.users[..i].iter().any(|o| o.name == u.name) {
                return Err((
                    format!("users[{i}].name"),
                    format!("users[{i}]: user `{}` is listed twice", u.name),
                ));
            }
        }
        if let Some(short) = self.read_tokens.iter().find(|t| t.len() < MIN_TOKEN_CHARS) {
            return Err(("read_tokens".into(), format!(
                "read token `{}…` is shorter than {MIN_TOKEN_CHARS} characters; use a long random token (e.g. `openssl rand -hex 24`)",
                &short[..short.len().min(4)]
            )));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err((
                    "tls_key".into(),
                    "tls_cert is set but tls_key is not: HTTPS needs both".into(),
                ))
            }
            (None, Some(_)) => {
                return Err((
                    "tls_cert".into(),
                    "tls_key is set but tls_cert is not: HTTPS needs both".into(),
                ))
            }
            _ => {}
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err(("tls_client_ca".into(), "tls_client_ca needs tls_cert and tls_key: client certificates are checked over HTTPS".into()));
        }
        if self.tls_cert.is_none() && !self.listen.ip().is_loopback() && !self.insecure_no_tls {
            return Err(("listen".into(), format!(
                "listening on {} over plain HTTP would send agent tokens and dashboard passwords in clear: set tls_cert and tls_key (or --tls-cert/--tls-key), or listen on 127.0.0.1 behind a TLS reverse proxy, or pass --insecure-no-tls",
                self.listen
            )));
        }
        Ok(())
    }

    /// The HTTPS files, when the collector serves HTTPS.
    pub fn tls_files(&self) -> Option<stormwatch_http::tls::TlsFiles> {
        Some(stormwatch_http::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
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
            secure_cookies: self.secure_cookies || self.tls_cert.is_some(),
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
            insecure_no_tls: true,
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
    fn plain_http_only_on_loopback_unless_insecure_and_tls_needs_both_files() {
        let flags = |listen: &str| Flags {
            listen: Some(listen.parse().unwrap()),
            insecure_no_auth: true,
            ..Default::default()
        };
        assert!(Config::load(flags("127.0.0.1:6100")).is_ok());
        let err = Config::load(flags("10.0.0.5:6100"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("in clear")
                && err.contains("--insecure-no-tls")
                && err.contains("tls_cert"),
            "{err}"
        );
        let with = |cert: Option<&str>, key: Option<&str>, insecure: bool| Flags {
            tls_cert: cert.map(PathBuf::from),
            tls_key: key.map(PathBuf::from),
            insecure_no_tls: insecure,
            ..flags("10.0.0.5:6100")
        };
        assert!(Config::load(with(None, None, true)).is_ok());
        assert!(Config::load(with(Some("c.pem"), Some("k.pem"), false)).is_ok());
        let err = Config::load(with(Some("c.pem"), None, false))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls_key is not"), "{err}");
    }

    #[test]
    fn users_need_argon2_hashes() {
        let text =
            "listen = \"0.0.0.0:6100\"\n[[users]]\nname = \"ana\"\npassword_hash = \"hunter2\"\n";
        let file = parse_file(Path::new("c.toml"), text).unwrap();
        assert_eq!(file.users[0].role, stormwatch_web::Role::Viewer);
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
            insecure_no_tls: true,
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

    #[test]
    fn the_example_documents_the_defaults() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../collector.example.toml"
        ));
        let c = load(Some(path), &Overrides::default()).unwrap();
        let d = Config::default();
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.database_url, d.database_url);
        assert_eq!(c.data_dir, d.data_dir);
        assert_eq!(c.retention_days, d.retention_days);
        assert_eq!(c.max_body_bytes, d.max_body_bytes);
        assert_eq!(c.max_decompressed_bytes, d.max_decompressed_bytes);
        assert_eq!(c.max_db_connections, d.max_db_connections);
        assert_eq!(c.embedded_shared_buffers_mib, d.embedded_shared_buffers_mib);
        assert_eq!(c.insecure_no_auth, d.insecure_no_auth);
        assert_eq!(c.secure_cookies, d.secure_cookies);
        assert_eq!(c.alerts.evaluate_every, d.alerts.evaluate_every);
        assert_eq!(c.alerts.leader_lease, d.alerts.leader_lease);
    }

    #[test]
    fn invalid_values_name_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let shown = path.display().to_string();
        let load_text = |text: &str| {
            std::fs::write(&path, text).unwrap();
            load(Some(&path), &Overrides::default())
                .unwrap_err()
                .to_string()
        };
        let e = load_text("listen = \"127.0.0.1:7000\"\n\nretention_days = 0\n");
        assert_eq!(
            e,
            format!("config {shown}: line 3: retention_days must be at least 1")
        );
        let e = load_text("embedded_shared_buffers_mib = 8\n");
        assert!(
            e.starts_with(&format!(
                "config {shown}: line 1: embedded_shared_buffers_mib must be at least 16"
            )),
            "{e}"
        );
        let e = load_text("[[users]]\nname = \"a\"\npassword_hash = \"x\"\n[[users]]\nname = \"b\"\npassword_hash = \"y\"\n");
        assert!(
            e.starts_with(&format!("config {shown}: line 3: users[0] `a`")),
            "{e}"
        );
        let e = load_text("[alerts]\nevaluate_every = \"1h30\"\n");
        assert!(e.contains("line 2") && e.contains("needs a unit"), "{e}");
        let e = load_text("[alerts]\ndefault_rules = false\n\n[[alerts.rules]]\nname = \"slow\"\nkind = \"latency\"\n");
        assert!(
            e.starts_with(&format!("config {shown}: line 5: [alerts]: rule `slow`")),
            "{e}"
        );
    }

    #[test]
    fn flags_override_the_file_and_durations_take_every_unit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "retention_days = 3\ningest_tokens = [\"file-token-0123456789\"]\n[alerts]\nevaluate_every = \"1min\"\nleader_lease = \"1h\"\n",
        )
        .unwrap();
        let o = Overrides {
            retention_days: Some(5),
            ingest_tokens: Some(vec![" flag-token-0123456789 ".into(), "".into()]),
            database_url: Some(" ".into()),
            ..Default::default()
        };
        let c = load(Some(&path), &o).unwrap();
        assert_eq!(c.retention_days, 5);
        assert_eq!(c.ingest_tokens, ["flag-token-0123456789"]);
        assert_eq!(c.database_url, None);
        assert_eq!(
            c.alerts.evaluate_every,
            crate::alerts::config::Dur::secs(60)
        );
        assert_eq!(
            c.alerts.leader_lease,
            crate::alerts::config::Dur::secs(3_600)
        );
        assert_eq!(c.overrides, o);
        assert_eq!(c.config_path.as_deref(), Some(path.as_path()));
    }
}
