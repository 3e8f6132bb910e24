//! The `[[database]]` entries (databases the agent probes) and the `[span_flags]` section
//! (when a database span is flagged), with their validation.
//!
//! Passwords stay out of the file: `url` may contain `${VAR}` (replaced by that environment
//! variable when a connection is made) or the entry names `password_env`. A missing variable is
//! a config error, so a typo is seen at start-up or reload, not as a silent probe failure.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use stormwatch_model::DbRole;

/// The database engine of a `[[database]]` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// PostgreSQL (10 or newer).
    Postgres,
    /// MySQL or MariaDB.
    Mysql,
}

impl Engine {
    /// The name shipped in `ProbeSample.engine`.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Engine::Postgres => 5432,
            Engine::Mysql => 3306,
        }
    }
}

/// A duration in the grammar of every Stormwatch config file: seconds (`1`, `0.5`) or with
/// units (`"250ms"`, `"2s"`, `"1m"`, `"1min"`, `"1h30m"`).
pub use stormwatch_model::Dur as Seconds;

fn one_second() -> Seconds {
    stormwatch_model::Dur(Duration::from_secs(1))
}

/// One database the agent probes (`[[database]]`).
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// Name shown in the dashboard and alerts; unique among the entries.
    pub name: String,
    /// `postgres` or `mysql` (MySQL and MariaDB).
    pub engine: Engine,
    /// `primary` or `replica`: replicas report replication lag, primaries their replicas.
    pub role: DbRole,
    /// `postgres://user@host:5432/db` or `mysql://user@host:3306/db`; `${VAR}` is replaced by
    /// the environment variable VAR (for the password).
    pub url: String,
    /// Environment variable holding the password (instead of `${VAR}` in the URL).
    #[serde(default)]
    pub password_env: Option<String>,
    /// Addresses under which apps reach this database, as spans report their peer
    /// (`host:port`, or `host` for any port). Default: the URL's `host:port`.
    #[serde(default)]
    pub peers: Vec<String>,
    /// Probe every this long (default 1 s).
    #[serde(default = "one_second")]
    pub interval: Seconds,
    /// Spans through a replica further behind than this are flagged `replica_lag` (default 1 s).
    #[serde(default = "one_second")]
    pub lag_threshold: Seconds,
    /// Longest wait for connecting, and for each query (default 1 s); beyond it the probe fails
    /// with class `timeout`.
    #[serde(default = "one_second")]
    pub timeout: Seconds,
    /// Heartbeat table (`schema.table` or `table`), pt-heartbeat style: on a primary the agent
    /// creates it and writes the time into its one row every interval; on a replica it reads
    /// that row, and the lag is how old it is. Set it on both the primary and its replicas.
    #[serde(default)]
    pub heartbeat: Option<String>,
}

/// The URL with its password hidden: `Debug` output ends up in logs.
impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("name", &self.name)
            .field("engine", &self.engine)
            .field("role", &self.role)
            .field("url", &redact(&self.url))
            .field("password_env", &self.password_env)
            .field("peers", &self.peers)
            .field("interval", &self.interval)
            .field("lag_threshold", &self.lag_threshold)
            .field("timeout", &self.timeout)
            .field("heartbeat", &self.heartbeat)
            .finish()
    }
}

/// `scheme://user:secret@host` → `scheme://user:***@host`.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let auth_end = rest.find('/').unwrap_or(rest.len());
    match rest[..auth_end].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &url[..scheme_end],
                &rest[..colon],
                &rest[at..]
            ),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Replaces every `${VAR}` with the environment variable; names the first one missing.
pub fn substitute_env(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "`${` without a closing `}`".to_owned())?;
        let var = &after[..end];
        let value =
            std::env::var(var).map_err(|_| format!("environment variable `{var}` is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Database {
    /// The URL with `${VAR}` substituted.
    pub fn resolved_url(&self) -> Result<String, String> {
        substitute_env(&self.url)
    }

    /// The password from `password_env`, when set.
    pub fn password(&self) -> Result<Option<String>, String> {
        match &self.password_env {
            None => Ok(None),
            Some(var) => std::env::var(var)
                .map(Some)
                .map_err(|_| format!("environment variable `{var}` is not set")),
        }
    }

    /// `host:port` of the URL (`host=` / `port=` for PostgreSQL key-value strings).
    pub fn url_peer(&self) -> Option<String> {
        let port = self.engine.default_port();
        if let Some(i) = self.url.find("://") {
            let rest = &self.url[i + 3..];
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let hostport = &rest[..end];
            let hostport = hostport.rsplit('@').next()?;
            let hostport = hostport.split(',').next()?;
            if hostport.is_empty() {
                return None;
            }
            let has_port = if hostport.starts_with('[') {
                hostport.contains("]:")
            } else {
                hostport.contains(':')
            };
            return Some(if has_port {
                hostport.to_owned()
            } else {
                format!("{hostport}:{port}")
            });
        }
        let mut host = None;
        let mut p = port.to_string();
        for kv in self.url.split_whitespace() {
            if let Some(h) = kv.strip_prefix("host=") {
                host = Some(h.to_owned());
            } else if let Some(v) = kv.strip_prefix("port=") {
                p = v.to_owned();
            }
        }
        host.map(|h| format!("{h}:{p}"))
    }

    /// The peers this database answers to: `peers`, or else the URL's `host:port`.
    pub fn effective_peers(&self) -> Vec<String> {
        if self.peers.is_empty() {
            self.url_peer().into_iter().collect()
        } else {
            self.peers.clone()
        }
    }
}

/// When database spans are flagged (`[span_flags]`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SpanFlags {
    /// A SELECT / UPDATE / DELETE without WHERE (and without LIMIT) is a full-scan suspect.
    pub missing_where: bool,
    /// A database span that returned more rows than this is a full-scan suspect (0: never).
    pub full_scan_rows: i64,
}

impl Default for SpanFlags {
    fn default() -> Self {
        SpanFlags {
            missing_where: true,
            full_scan_rows: 10_000,
        }
    }
}

fn valid_table_name(t: &str) -> bool {
    let parts: Vec<&str> = t.split('.').collect();
    parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 63
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !p.starts_with(|c: char| c.is_ascii_digit())
        })
}

/// Checks the entries; the error is (key, message) like the rest of the config.
pub fn validate(dbs: &[Database], flags: &SpanFlags) -> Result<(), (String, String)> {
    if flags.full_scan_rows < 0 {
        return Err((
            "span_flags.full_scan_rows".into(),
            "must be 0 (off) or positive".into(),
        ));
    }
    let mut names = std::collections::HashSet::new();
    for (i, d) in dbs.iter().enumerate() {
        let key = |k: &str| format!("database[{i}].{k}");
        let err = |k: &str, m: String| Err((key(k), m));
        if d.name.is_empty() || d.name.len() > stormwatch_model::limits::MAX_LABEL_BYTES {
            return err("name", "must be 1 to 256 bytes".into());
        }
        if !names.insert(d.name.as_str()) {
            return err("name", format!("`{}` is used by two entries", d.name));
        }
        if d.role == DbRole::Unknown {
            return err("role", "must be `primary` or `replica`".into());
        }
        let url = match d.resolved_url() {
            Ok(u) => u,
            Err(m) => return err("url", m),
        };
        match d.engine {
            Engine::Postgres => {
                // With sslmode and sslrootcert as the probe reads them (the CA file too).
                if let Err(e) = stormwatch_pgtls::ConnectTarget::parse(&url) {
                    return err(
                        "url",
                        format!("not a PostgreSQL connection string ({e}): {}", redact(&url)),
                    );
                }
            }
            Engine::Mysql => {
                // With ssl-mode and ssl-ca as the probe reads them (the CA file too).
                if let Err(e) = super::mysql_target::Target::parse(&url) {
                    return err("url", format!("{e}: {}", redact(&url)));
                }
            }
        }
        if let Err(m) = d.password() {
            return err("password_env", m);
        }
        if d.peers.iter().any(|p| p.trim().is_empty()) {
            return err("peers", "an empty peer never matches".into());
        }
        if d.effective_peers().is_empty() {
            return err(
                "peers",
                "the URL names no host: list the addresses apps use".into(),
            );
        }
        let interval = d.interval.0;
        if interval < Duration::from_millis(100) || interval > Duration::from_secs(3600) {
            return err("interval", "must be between 100ms and 1h".into());
        }
        if d.timeout.0 < Duration::from_millis(10) || d.timeout.0 > Duration::from_secs(60) {
            return err("timeout", "must be between 10ms and 60s".into());
        }
        if let Some(t) = &d.heartbeat {
            if !valid_table_name(t) {
                return err(
                    "heartbeat",
                    format!(
                        "`{t}` is not a table name like `stormwatch_heartbeat` or `ops.heartbeat`"
                    ),
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(url: &str) -> Database {
        Database {
            name: "d".into(),
            engine: Engine::Postgres,
            role: DbRole::Replica,
            url: url.into(),
            password_env: None,
            peers: vec![],
            interval: one_second(),
            lag_threshold: one_second(),
            timeout: one_second(),
            heartbeat: None,
        }
    }

    #[test]
    fn durations_use_the_grammar_of_every_config() {
        // `1h` used to fail here while collector.toml took it, and `1min` the other way.
        #[derive(serde::Deserialize)]
        struct D {
            a: Seconds,
            b: Seconds,
            c: Seconds,
            d: Seconds,
        }
        let d: D = toml::from_str("a = \"250ms\"\nb = \"1min\"\nc = \"1h\"\nd = 0.5\n").unwrap();
        assert_eq!(d.a.0, Duration::from_millis(250));
        assert_eq!(d.b.0, Duration::from_secs(60));
        assert_eq!(d.c.0, Duration::from_secs(3_600));
        assert_eq!(d.d.0, Duration::from_millis(500));
        let bad = toml::from_str::<D>("a = \"x\"\nb = 1\nc = 1\nd = 1\n")
            .err()
            .unwrap();
        assert!(bad.to_string().contains("`x`"), "{bad}");
    }

    #[test]
    fn env_substitution_and_redaction() {
        std::env::set_var("SW_TEST_DB_PW", "s3cret");
        assert_eq!(
            substitute_env("postgres://u:${SW_TEST_DB_PW}@h/db").unwrap(),
            "postgres://u:s3cret@h/db"
        );
        let e = substitute_env("postgres://u:${SW_NOT_SET_XYZ}@h/db").unwrap_err();
        assert!(e.contains("SW_NOT_SET_XYZ"), "{e}");
        assert_eq!(redact("mysql://u:pw@h:3306/x"), "mysql://u:***@h:3306/x");
        assert_eq!(redact("mysql://u@h/x"), "mysql://u@h/x");
        let d = db("postgres://u:pw@h/x");
        assert!(!format!("{d:?}").contains("pw@"));
    }

    #[test]
    fn peers_default_to_the_url() {
        assert_eq!(
            db("postgres://u:p@db-1:6432/x").url_peer().as_deref(),
            Some("db-1:6432")
        );
        assert_eq!(
            db("postgres://db-1/x").url_peer().as_deref(),
            Some("db-1:5432")
        );
        assert_eq!(
            db("host=db-2 port=5433 user=x").url_peer().as_deref(),
            Some("db-2:5433")
        );
        let mut m = db("mysql://root@127.0.0.1/x");
        m.engine = Engine::Mysql;
        assert_eq!(m.url_peer().as_deref(), Some("127.0.0.1:3306"));
    }
}

#[cfg(test)]
mod load_tests {
    use crate::config::{load, Overrides};

    fn load_text(text: &str) -> Result<crate::Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.toml");
        std::fs::write(&p, text).unwrap();
        load(Some(&p), &Overrides::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn database_entries_load_with_defaults() {
        std::env::set_var("SW_TEST_LOAD_PW", "pw");
        let c = load_text(
            "[[database]]\nname = \"a\"\nengine = \"postgres\"\nrole = \"replica\"\n\
             url = \"postgres://u:${SW_TEST_LOAD_PW}@db-a/x\"\ninterval = \"500ms\"\n",
        )
        .unwrap();
        let d = &c.databases[0];
        assert_eq!(d.interval.0, std::time::Duration::from_millis(500));
        assert_eq!(d.lag_threshold.0, std::time::Duration::from_secs(1));
        assert_eq!(d.effective_peers(), vec!["db-a:5432".to_owned()]);
        assert_eq!(d.resolved_url().unwrap(), "postgres://u:pw@db-a/x");
    }

    #[test]
    fn errors_name_the_entry_line_and_key() {
        let text = "[[database]]\nname = \"a\"\nengine = \"postgres\"\nrole = \"primary\"\n\
                    url = \"postgres://u@a/x\"\n\n[[database]]\nname = \"b\"\nengine = \"mysql\"\n\
                    role = \"replica\"\nurl = \"mysql://u:${SW_SURELY_UNSET_VAR}@b/x\"\n";
        let e = load_text(text).unwrap_err();
        assert!(e.contains("line 11"), "{e}");
        assert!(e.contains("database[1].url"), "{e}");
        assert!(e.contains("SW_SURELY_UNSET_VAR"), "{e}");
        let e = load_text(&text.replace("\"b\"", "\"a\"")).unwrap_err();
        assert!(
            e.contains("database[1].name") && e.contains("line 8"),
            "{e}"
        );
        let e = load_text("[[database]]\nname = \"a\"\nengine = \"oracle\"\n").unwrap_err();
        assert!(e.contains("line 3") && e.contains("oracle"), "{e}");
        let e = load_text(
            "[[database]]\nname = \"a\"\nengine = \"postgres\"\nrole = \"primary\"\n\
             url = \"postgres://u@a/x\"\ninterval = \"10ms\"\n",
        )
        .unwrap_err();
        assert!(
            e.contains("database[0].interval") && e.contains("line 6"),
            "{e}"
        );
    }
}
