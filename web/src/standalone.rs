//! Running the dashboard on its own, against any copy of the store — typically a read replica,
//! so that dashboards never load the primary. It reads only; it applies no migrations.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use stormwatch_store::{Store, StoreOptions};

use crate::auth::{check_hash, Auth, AuthOptions, Role, User};

/// Flags of `stormwatch-web`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "stormwatch-web",
    version,
    about = "Stormwatch dashboard on its own, against a (replica of the) store"
)]
pub struct Flags {
    /// Address to listen on.
    #[arg(long, env = "STORMWATCH_WEB_LISTEN", default_value = "127.0.0.1:6200")]
    pub listen: SocketAddr,
    /// PostgreSQL URL of the store (a read replica is enough).
    #[arg(long, env = "STORMWATCH_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// TOML file with `[[users]]` (name, password_hash, role) and `secure_cookies`, the same
    /// keys as in the collector's config.
    #[arg(long, env = "STORMWATCH_WEB_USERS")]
    pub users: Option<PathBuf>,
    /// Serve without sign-in on a non-loopback address.
    #[arg(long, env = "STORMWATCH_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<UserEntry>,
    #[serde(default)]
    secure_cookies: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    password_hash: String,
    #[serde(default = "viewer")]
    role: Role,
}

fn viewer() -> Role {
    Role::Viewer
}

/// Reads and checks the users file; the error names the file and what is wrong.
pub fn load_users(path: &Path) -> Result<AuthOptions, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: UsersFile = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    for (i, u) in file.users.iter().enumerate() {
        check_hash(&u.password_hash).map_err(|e| {
            format!(
                "{}: users[{i}] `{}`: password_hash is {e}",
                path.display(),
                u.name
            )
        })?;
    }
    Ok(AuthOptions {
        users: file
            .users
            .into_iter()
            .map(|u| User {
                name: u.name,
                password_hash: u.password_hash,
                role: u.role,
            })
            .collect(),
        read_tokens: Vec::new(),
        secure_cookies: file.secure_cookies,
    })
}

/// The access settings for `flags`, refusing an open dashboard on a non-loopback address.
pub fn access(flags: &Flags) -> Result<AuthOptions, String> {
    let opts = match &flags.users {
        Some(p) => load_users(p)?,
        None => AuthOptions::default(),
    };
    if opts.users.is_empty() && !flags.listen.ip().is_loopback() && !flags.insecure_no_auth {
        return Err(format!(
            "listening on {} without users would expose the dashboard: pass --users FILE, listen on 127.0.0.1, or --insecure-no-auth",
            flags.listen
        ));
    }
    Ok(opts)
}

/// Connects to the store and serves the dashboard until `shutdown` resolves.
pub async fn serve(
    flags: Flags,
    auth: AuthOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let store = Store::connect(&StoreOptions {
        url: flags.database_url.clone(),
        max_connections: 8,
        retention_days: 7,
    })
    .await
    .map_err(|e| format!("connecting to the store: {e}"))?;
    let app = crate::router_with(Arc::new(store), Arc::new(Auth::new(auth)));
    let listener = tokio::net::TcpListener::bind(flags.listen)
        .await
        .map_err(|e| format!("listening on {}: {e}", flags.listen))?;
    tracing::info!(addr = %flags.listen, "dashboard listening");
    // Read timeouts, a connection cap, and the peer addresses the sign-in rate limit
    // (crate::login_limit) needs.
    stormwatch_http::serve(listener, app, stormwatch_http::Limits::default(), shutdown).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(listen: &str, users: Option<PathBuf>, insecure: bool) -> Flags {
        Flags {
            listen: listen.parse().unwrap(),
            database_url: "postgres://localhost/x".into(),
            users,
            insecure_no_auth: insecure,
        }
    }

    #[test]
    fn open_only_on_loopback_and_users_files_are_checked() {
        assert!(access(&flags("127.0.0.1:6200", None, false)).is_ok());
        let e = access(&flags("0.0.0.0:6200", None, false)).unwrap_err();
        assert!(e.contains("--insecure-no-auth"), "{e}");
        assert!(access(&flags("0.0.0.0:6200", None, true)).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(
            &path,
            "[[users]]\nname = \"ana\"\npassword_hash = \"plain\"\n",
        )
        .unwrap();
        let e = access(&flags("0.0.0.0:6200", Some(path.clone()), false)).unwrap_err();
        assert!(e.contains("users[0] `ana`"), "{e}");
        let hash = crate::auth::hash_password("pw").unwrap();
        std::fs::write(
            &path,
            format!("[[users]]\nname = \"ana\"\npassword_hash = \"{hash}\"\nrole = \"admin\"\n"),
        )
        .unwrap();
        let opts = access(&flags("0.0.0.0:6200", Some(path), false)).unwrap();
        assert_eq!(opts.users[0].role, Role::Admin);
    }
}
