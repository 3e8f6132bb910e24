//! The files the demo writes into its data directory at every start: the collector's config
//! (the demo user, alert rules for every incident of the scenario, the channels to the local
//! Slack page), the agent's config (probes of the app's primary and replica), and the demo
//! login (a generated password kept in `dashboard-login`, mode 0600, reused by the next run).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The dashboard user the demo creates.
pub const DEMO_USER: &str = "demo";

/// Environment variables naming a real Slack incoming webhook, used besides the local page.
pub const SLACK_ENV: [&str; 2] = ["SLACK_WEBHOOK_URL", "STORMWATCH_SLACK_WEBHOOK_URL"];

/// The name the demo's agent gives the board's Redis (`[peer_names]`).
pub const CACHE_NAME: &str = "board-cache";

/// The operation of the board's list page, as the agent names server spans (method + route).
pub const LIST_OPERATION: &str = "GET /classes/{code}/posts";
/// The operation of the board's upload endpoint.
pub const UPLOAD_OPERATION: &str = "POST /uploads";

/// The demo user's password: read from `<data>/dashboard-login`, or generated there.
pub fn demo_password(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("dashboard-login");
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Some(pw) = text
            .lines()
            .find_map(|l| l.strip_prefix("password="))
            .filter(|p| p.len() >= 12)
        {
            return Ok(pw.trim().to_owned());
        }
    }
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let pw: String = bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "user={DEMO_USER}\npassword={pw}")?;
    Ok(pw)
}

/// Where the collector's alert channels post.
pub struct Channels {
    /// Base URL of the local Slack page (`/slack`, `/webhook`).
    pub local: String,
    /// The environment variable holding a real Slack webhook URL, when one is set.
    pub real_slack_env: Option<&'static str>,
}

impl Channels {
    pub fn new(local: String) -> Channels {
        let real_slack_env = SLACK_ENV.into_iter().find(|v| {
            std::env::var(v)
                .map(|u| !u.trim().is_empty())
                .unwrap_or(false)
        });
        Channels {
            local,
            real_slack_env,
        }
    }
}

/// Escapes a TOML basic string.
fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Writes `<data>/collector.toml` and returns its path.
pub fn write_collector_config(
    data_dir: &Path,
    dashboard_url: &str,
    password_hash: &str,
    channels: &Channels,
) -> anyhow::Result<PathBuf> {
    let mut t = String::new();
    t.push_str(
        "# Written by stormwatch-demo at every start (the next start overwrites it).\n\
         # [alerts] is hot-reloaded: add a rule and save to try it on the running demo.\n\
         # No rule is written here: the demo runs on the default rules, as a new install does.\n\n",
    );
    t.push_str("[alerts]\n");
    t.push_str(&format!("dashboard_url = {}\n", q(dashboard_url)));
    t.push_str("default_rules = true\n\n");
    t.push_str(&format!(
        "[[alerts.channels]]\nname = \"slack-page\"\ntype = \"slack\"\nurl = {}\nrate_limit_per_minute = 60\n\n",
        q(&format!("{}/slack", channels.local))
    ));
    t.push_str(&format!(
        "[[alerts.channels]]\nname = \"webhook-page\"\ntype = \"webhook\"\nurl = {}\nrate_limit_per_minute = 60\n\n",
        q(&format!("{}/webhook", channels.local))
    ));
    if let Some(var) = channels.real_slack_env {
        t.push_str(&format!(
            "[[alerts.channels]]\nname = \"slack\"\ntype = \"slack\"\nurl_env = {}\n\n",
            q(var)
        ));
    }
    t.push_str(&format!(
        "\n[[users]]\nname = {}\npassword_hash = {}\nrole = \"admin\"\n",
        q(DEMO_USER),
        q(password_hash)
    ));
    let path = data_dir.join("collector.toml");
    std::fs::write(&path, t).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Writes `<data>/agent.toml`: the probes of the app's databases (a fresh connection every
/// second, as the probe user) and the spool directory.
pub fn write_agent_config(
    data_dir: &Path,
    primary_url: &str,
    replica_url: &str,
    redis_port: u16,
) -> anyhow::Result<PathBuf> {
    let t = format!(
        "# Written by stormwatch-demo at every start (the next start overwrites it).\n\
         # Reloaded on save, like any agent config.\n\n\
         [[database]]\nname = \"board-primary\"\nengine = \"postgres\"\nrole = \"primary\"\nurl = {}\ninterval = \"1s\"\ntimeout = \"1s\"\n\n\
         [[database]]\nname = \"board-replica\"\nengine = \"postgres\"\nrole = \"replica\"\nurl = {}\ninterval = \"1s\"\ntimeout = \"1s\"\nlag_threshold = \"1s\"\n\n\
         [peer_names]\n\"127.0.0.1:{redis_port}\" = {}\n",
        q(primary_url),
        q(replica_url),
        q(CACHE_NAME)
    );
    let path = data_dir.join("agent.toml");
    std::fs::write(&path, t).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_config_parses_and_resolves() {
        let dir = tempfile::tempdir().unwrap();
        let hash = stormwatch_web::auth::hash_password("a demo password").unwrap();
        let path = write_collector_config(
            dir.path(),
            "http://127.0.0.1:6100",
            &hash,
            &Channels {
                local: "http://127.0.0.1:6120".into(),
                real_slack_env: None,
            },
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let file = stormwatch_collector::config::parse_file(&path, &text).unwrap();
        let resolved = file
            .alerts
            .resolve("http://127.0.0.1:6100", &|_| None)
            .unwrap();
        let names: Vec<&str> = resolved.rules.iter().map(|r| r.name.as_str()).collect();
        // The default rules only, as a new install has them.
        let defaults: Vec<String> = stormwatch_collector::alerts::config::default_rules()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, defaults);
        assert!(!text.contains("[[alerts.rules]]"));
        assert_eq!(resolved.channels.len(), 2);
        assert_eq!(file.users[0].name, DEMO_USER);
    }

    #[test]
    fn password_is_generated_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = demo_password(dir.path()).unwrap();
        assert_eq!(a.len(), 12);
        assert_eq!(demo_password(dir.path()).unwrap(), a);
    }
}
