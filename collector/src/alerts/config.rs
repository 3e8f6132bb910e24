//! The `[alerts]` section of `collector.toml`: channels, rules, silences.
//! Every key is documented in `collector.example.toml`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use stormwatch_model::DependencyClass;

/// Durations (`evaluate_every`, `for`, `window`…) in the one grammar of every config file:
/// `500ms`, `15s`, `5m` or `5min`, `1h`, `1d`, `1h30m`, or a number of seconds.
pub use stormwatch_model::duration::{parse_duration, Dur};

fn yes() -> bool {
    true
}
fn every_1s() -> Dur {
    Dur::secs(1)
}
fn lease_15s() -> Dur {
    Dur::secs(15)
}

/// `[alerts]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "every_1s")]
    pub evaluate_every: Dur,
    /// How long the alert leader's lease lasts without renewal (renewed every round): a
    /// leader that stalls, or whose host vanishes, is replaced this long after its last round
    /// (plus up to 2 s). At least 1 s.
    #[serde(default = "lease_15s")]
    pub leader_lease: Dur,
    /// Base URL of the dashboard for links in messages (default: `http://<listen>`).
    #[serde(default)]
    pub dashboard_url: Option<String>,
    /// Ship the default rules (Redis p95, replica lag, DB connect failures, 5xx rate, agent
    /// silent) in addition to the configured ones; a configured rule of the same name wins.
    #[serde(default = "yes")]
    pub default_rules: bool,
    #[serde(default)]
    pub channels: Vec<ChannelConfig>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    #[serde(default)]
    pub silences: Vec<SilenceConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            enabled: true,
            evaluate_every: every_1s(),
            leader_lease: lease_15s(),
            dashboard_url: None,
            default_rules: true,
            channels: vec![],
            rules: vec![],
            silences: vec![],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// Slack incoming webhook, or `chat.postMessage` with a bot token.
    Slack,
    /// A generic JSON webhook (schema `stormwatch.alerts/v2`).
    Webhook,
}

/// `[[alerts.channels]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ChannelKind,
    /// The webhook URL. It is a secret: prefer `url_env`.
    #[serde(default)]
    pub url: Option<String>,
    /// Name of the environment variable holding the webhook URL.
    #[serde(default)]
    pub url_env: Option<String>,
    /// Slack bot mode: environment variable holding the bot token (`xoxb-…`).
    #[serde(default)]
    pub bot_token_env: Option<String>,
    /// Slack bot mode: the channel to post to.
    #[serde(default)]
    pub channel: Option<String>,
    /// Slack Web API base (tests point it at a local receiver).
    #[serde(default)]
    pub api_url: Option<String>,
    /// Messages per minute at most; more wait their turn (never dropped).
    #[serde(default = "twenty")]
    pub rate_limit_per_minute: u32,
    /// Attempts before a delivery is recorded as failed.
    #[serde(default = "ten")]
    pub max_attempts: u32,
}

fn twenty() -> u32 {
    20
}
fn ten() -> u32 {
    10
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// A latency quantile of aggregates above a threshold (ms) or above `factor` × baseline.
    Latency,
    /// Share of failed spans (or of `statuses`) above a threshold (0–1).
    ErrorRate,
    /// Replica lag above a threshold (seconds), or replay paused.
    ReplicationLag,
    /// Connection failures to a database (count in the window), or connect time above `connect_ms`.
    DbConnect,
    /// Full-scan suspect spans per operation (count in the window).
    FullScan,
    /// No batch from an agent for `threshold` seconds.
    AgentSilent,
    /// Spans dropped by an agent (count in the window).
    SpansDropped,
    /// Host CPU / memory / disk percent above a threshold.
    Host,
    /// An OTLP metric series (`series`) at or above a threshold in its unit, or, with
    /// `ratio_to`, as a percentage of another series (pool usage of its max ≥ 90 %).
    Metric,
}

/// How a `metric` rule reads its series over the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduce {
    /// The latest value (up-down sums, gauges: the default).
    Last,
    /// The greatest value seen.
    Max,
    /// The mean of the values.
    Mean,
    /// Counters: the increase per second (the default for counters).
    Rate,
    /// Histograms: the 95th percentile (the default for histograms).
    P95,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    PreviousHour,
    SameTimeYesterday,
    /// What is usual for the instance: the median of its per-minute values over the previous
    /// hour, or over the same half hour yesterday when that is higher. A median ignores an
    /// incident that took less than half the minutes, so a slowdown does not become its own
    /// baseline within the hour.
    Usual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostMetric {
    Cpu,
    Memory,
    Disk,
}

/// `[[alerts.rules]]`; serialized (unset options left out) for `GET /api/v1/rules`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// One of the rules shipped enabled (`default_rules`), not written in the config. Never
    /// read from a file.
    #[serde(skip_deserializing, default)]
    pub default: bool,
    pub kind: RuleKind,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `critical`, `warning` or `info`.
    #[serde(default = "warning")]
    pub severity: String,
    /// Labels instances are grouped by; each kind has a default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<Vec<String>>,
    /// How long the condition must hold before firing.
    #[serde(default, rename = "for")]
    pub for_: Dur,
    /// How long the condition must be gone before resolving (hysteresis).
    #[serde(default = "thirty_s")]
    pub resolve_after: Dur,
    /// Notify again while still firing, this often (default: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renotify_every: Option<Dur>,
    /// Channels to notify (default: every channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// Data window the condition is computed over.
    #[serde(default = "one_m")]
    pub window: Dur,
    /// The threshold; its unit depends on the kind (see `RuleKind`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    // Filters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<DependencyClass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    // Kind-specific.
    /// latency: the quantile (default 0.95).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<f64>,
    /// latency: compare against this baseline instead of (or besides) a fixed threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
    /// latency with a baseline: fire above `factor` × baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// latency: never fire below this many milliseconds, whatever the baseline (default: the
    /// class's floor, [`latency_floor_ms`], when the rule has a baseline). A quiet peer whose
    /// p95 goes from 0.3 to 3 ms is not an incident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor_ms: Option<f64>,
    /// latency / error_rate: only these classes (`class` picks one; this picks several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<DependencyClass>>,
    /// latency / error_rate: ignore groups with fewer spans in the window (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_count: Option<u64>,
    /// error_rate: count these HTTP statuses (`"503"`, `"5xx"`) instead of failed spans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statuses: Option<Vec<String>>,
    /// replication_lag: also fire when replay is paused (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_paused: Option<bool>,
    /// db_connect: only these failure classes (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_classes: Option<Vec<String>>,
    /// db_connect: fire when a connect takes longer than this many ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<f64>,
    /// host: which metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<HostMetric>,
    /// metric: the OTLP metric's name (`db.client.connections.usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<String>,
    /// metric: only series with these attributes (`{ state = "used" }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, String>>,
    /// metric: compare as a percentage of this series (`db.client.connections.max`), matched by
    /// service, instance and the attributes both have; `threshold` is then in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio_to: Option<String>,
    /// metric: how the window's points are read (default by the series' kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduce: Option<Reduce>,
}

fn warning() -> String {
    "warning".into()
}
fn thirty_s() -> Dur {
    Dur::secs(30)
}
fn one_m() -> Dur {
    Dur::secs(60)
}

/// `[[alerts.silences]]`: by rule and labels, once (`from`/`to`) or daily (`daily`, UTC).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceConfig {
    #[serde(default)]
    pub rule: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// RFC 3339.
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    /// `"02:00-02:30"` every day, UTC.
    #[serde(default)]
    pub daily: Option<String>,
    #[serde(default)]
    pub comment: String,
}

impl RuleConfig {
    /// A rule with every optional field unset.
    pub fn new(name: &str, kind: RuleKind) -> Self {
        RuleConfig {
            name: name.into(),
            default: false,
            kind,
            enabled: true,
            severity: warning(),
            group_by: None,
            for_: Dur::default(),
            resolve_after: thirty_s(),
            renotify_every: None,
            channels: None,
            window: one_m(),
            threshold: None,
            service: None,
            class: None,
            peer: None,
            operation: None,
            database: None,
            host: None,
            quantile: None,
            baseline: None,
            factor: None,
            floor_ms: None,
            classes: None,
            min_count: None,
            statuses: None,
            replay_paused: None,
            failure_classes: None,
            connect_ms: None,
            metric: None,
            series: None,
            attributes: None,
            ratio_to: None,
            reduce: None,
        }
    }

    /// The labels instances of this rule are told apart by.
    pub fn group_by(&self) -> Vec<String> {
        if let Some(g) = &self.group_by {
            return g.clone();
        }
        let default: &[&str] = match self.kind {
            RuleKind::Latency => &["service", "class", "peer"],
            RuleKind::ErrorRate => &["service", "operation"],
            RuleKind::ReplicationLag | RuleKind::DbConnect => &["database"],
            RuleKind::FullScan => &["service", "operation", "peer"],
            RuleKind::AgentSilent | RuleKind::SpansDropped => &["agent"],
            RuleKind::Host => &["host"],
            // Every label: the service, the instance and the series' attributes.
            RuleKind::Metric => &[],
        };
        default.iter().map(|s| (*s).to_owned()).collect()
    }
}

/// The latency below which a dependency of `class` is never called slow by a baseline rule:
/// above what a busy CPU alone adds to a healthy call (an upload flood on a 2-core machine
/// that was also compiling pushed a healthy Redis's p95 from 18 to 95 ms in the stranger
/// test), well below what makes users wait.
pub fn latency_floor_ms(class: DependencyClass) -> f64 {
    match class {
        DependencyClass::Redis => 100.0,
        DependencyClass::Db => 250.0,
        _ => 500.0,
    }
}

/// How far back the default rules over traffic look: what arrived in the last 20 s (spans
/// arrive up to ~8 s after they end with the SDKs' default 5 s export delay), so an incident
/// shows within seconds and its end within about half a minute.
const DEFAULT_WINDOW_S: u64 = 20;
/// How long the default rules wait, condition gone, before resolving.
const DEFAULT_RESOLVE_AFTER_S: u64 = 15;

/// The rules that ship enabled: written for apps nobody here wrote, with no threshold to set.
pub fn default_rules() -> Vec<RuleConfig> {
    let quick = |r: &mut RuleConfig| {
        r.window = Dur::secs(DEFAULT_WINDOW_S);
        r.resolve_after = Dur::secs(DEFAULT_RESOLVE_AFTER_S);
    };
    // Every dependency peer against what is usual for it (slow Redis, a slow partner, a
    // database gone slow), named by peer.
    let mut latency = RuleConfig::new("dependency-latency", RuleKind::Latency);
    latency.classes = Some(vec![
        DependencyClass::Db,
        DependencyClass::Redis,
        DependencyClass::HttpClient,
        DependencyClass::Messaging,
    ]);
    latency.group_by = Some(vec!["class".into(), "peer".into()]);
    latency.quantile = Some(0.95);
    latency.baseline = Some(Baseline::Usual);
    latency.factor = Some(5.0);
    latency.min_count = Some(20);
    latency.severity = "critical".into();
    quick(&mut latency);

    // 5xx per endpoint, so a full list limiter and an upload flood read differently.
    let mut http5xx = RuleConfig::new("http-5xx-rate", RuleKind::ErrorRate);
    http5xx.class = Some(DependencyClass::HttpServer);
    http5xx.statuses = Some(vec!["5xx".into()]);
    http5xx.threshold = Some(0.05);
    http5xx.min_count = Some(20);
    http5xx.group_by = Some(vec!["service".into(), "operation".into()]);
    quick(&mut http5xx);
    // Half the latency rule's window: a limiter's first 503s are a few percent of 20 s of
    // traffic (16 s to fire on the stranger's shop), the same 503s are twice that of 10 s.
    http5xx.window = Dur::secs(DEFAULT_WINDOW_S / 2);

    let mut lag = RuleConfig::new("replica-lag", RuleKind::ReplicationLag);
    lag.threshold = Some(5.0);
    lag.severity = "critical".into();
    lag.resolve_after = Dur::secs(DEFAULT_RESOLVE_AFTER_S);

    let mut connect = RuleConfig::new("db-connect-failures", RuleKind::DbConnect);
    connect.threshold = Some(1.0);
    connect.window = Dur::secs(15);
    connect.resolve_after = Dur::secs(DEFAULT_RESOLVE_AFTER_S);
    connect.severity = "critical".into();

    let mut scans = RuleConfig::new("full-scan", RuleKind::FullScan);
    scans.threshold = Some(5.0);
    quick(&mut scans);

    let mut silent = RuleConfig::new("agent-silent", RuleKind::AgentSilent);
    silent.threshold = Some(60.0);

    let mut drops = RuleConfig::new("agent-drops", RuleKind::SpansDropped);
    drops.threshold = Some(1.0);

    vec![latency, http5xx, lag, connect, scans, silent, drops]
}

/// A channel with its secrets resolved.
#[derive(Debug, Clone)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
    pub target: Target,
    pub rate_limit_per_minute: u32,
    pub max_attempts: u32,
}

/// Where a channel posts. `Debug` never prints the secret.
#[derive(Clone)]
pub enum Target {
    Webhook {
        url: String,
    },
    SlackBot {
        api_url: String,
        token: String,
        channel: String,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Webhook { .. } => f.write_str("Webhook { url: <secret> }"),
            Target::SlackBot {
                api_url, channel, ..
            } => write!(
                f,
                "SlackBot {{ api_url: {api_url}, channel: {channel}, token: <secret> }}"
            ),
        }
    }
}

/// Rules and channels ready to use.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub evaluate_every: Dur,
    pub leader_lease: Dur,
    pub dashboard_url: String,
    pub rules: Vec<RuleConfig>,
    pub channels: Vec<Channel>,
    pub silences: Vec<SilenceConfig>,
}

/// Environment variable that, when set and no channel is configured, creates a Slack channel.
pub const SLACK_WEBHOOK_ENV: &str = "STORMWATCH_SLACK_WEBHOOK_URL";

impl AlertsConfig {
    /// Checks the rules, resolves channel secrets from the environment and adds the default
    /// rules. Errors name the rule or channel.
    pub fn resolve(
        &self,
        default_dashboard: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Resolved, String> {
        let mut channels = Vec::new();
        for c in &self.channels {
            let from_env = |var: &Option<String>, what: &str| -> Result<Option<String>, String> {
                match var {
                    None => Ok(None),
                    Some(v) => env(v)
                        .filter(|s| !s.trim().is_empty())
                        .map(Some)
                        .ok_or_else(|| {
                            format!(
                                "channel `{}`: environment variable {v} ({what}) is not set",
                                c.name
                            )
                        }),
                }
            };
            let url = match from_env(&c.url_env, "webhook URL")? {
                Some(u) => Some(u),
                None => c.url.clone(),
            };
            let target = match (c.kind, from_env(&c.bot_token_env, "Slack bot token")?) {
                (ChannelKind::Slack, Some(token)) => Target::SlackBot {
                    api_url: c
                        .api_url
                        .clone()
                        .unwrap_or_else(|| "https://slack.com/api".into()),
                    token,
                    channel: c
                        .channel
                        .clone()
                        .ok_or_else(|| format!("channel `{}`: bot mode needs `channel`", c.name))?,
                },
                (_, _) => Target::Webhook {
                    url: url.ok_or_else(|| {
                        format!(
                            "channel `{}`: needs `url_env` (or `url`, or a bot token)",
                            c.name
                        )
                    })?,
                },
            };
            if channels.iter().any(|x: &Channel| x.name == c.name) {
                return Err(format!("channel `{}` is defined twice", c.name));
            }
            channels.push(Channel {
                name: c.name.clone(),
                kind: c.kind,
                target,
                rate_limit_per_minute: c.rate_limit_per_minute.max(1),
                max_attempts: c.max_attempts.max(1),
            });
        }
        if channels.is_empty() {
            if let Some(url) = env(SLACK_WEBHOOK_ENV).filter(|u| !u.trim().is_empty()) {
                channels.push(Channel {
                    name: "slack".into(),
                    kind: ChannelKind::Slack,
                    target: Target::Webhook { url },
                    rate_limit_per_minute: 20,
                    max_attempts: 10,
                });
            }
        }
        let mut rules: Vec<RuleConfig> = self.rules.clone();
        if self.default_rules {
            for d in default_rules() {
                if !rules.iter().any(|r| r.name == d.name) {
                    rules.push(RuleConfig { default: true, ..d });
                }
            }
        }
        rules.retain(|r| r.enabled);
        let mut seen = std::collections::HashSet::new();
        for r in &rules {
            if !seen.insert(r.name.as_str()) {
                return Err(format!("rule `{}` is defined twice", r.name));
            }
            check_rule(r, &channels)?;
        }
        for s in &self.silences {
            check_silence(s)?;
        }
        Ok(Resolved {
            evaluate_every: Dur(self.evaluate_every.0.max(Duration::from_millis(200))),
            leader_lease: Dur(self.leader_lease.0.max(Duration::from_secs(1))),
            dashboard_url: self
                .dashboard_url
                .clone()
                .unwrap_or_else(|| default_dashboard.to_owned())
                .trim_end_matches('/')
                .to_owned(),
            rules,
            channels,
            silences: self.silences.clone(),
        })
    }
}

fn check_rule(r: &RuleConfig, channels: &[Channel]) -> Result<(), String> {
    let err = |m: String| Err(format!("rule `{}`: {m}", r.name));
    if !["critical", "warning", "info"].contains(&r.severity.as_str()) {
        return err(format!(
            "severity `{}` must be critical, warning or info",
            r.severity
        ));
    }
    for c in r.channels.iter().flatten() {
        if !channels.iter().any(|x| &x.name == c) {
            return err(format!("unknown channel `{c}`"));
        }
    }
    let allowed: &[&str] = match r.kind {
        RuleKind::Latency | RuleKind::ErrorRate => &["service", "class", "peer", "operation"],
        RuleKind::ReplicationLag | RuleKind::DbConnect => &["database"],
        RuleKind::FullScan => &["service", "operation", "peer"],
        RuleKind::AgentSilent | RuleKind::SpansDropped => &["agent"],
        RuleKind::Host => &["host"],
        // Any attribute of the series may be a label.
        RuleKind::Metric => &[],
    };
    for g in r.group_by() {
        if r.kind != RuleKind::Metric && !allowed.contains(&g.as_str()) {
            return err(format!(
                "cannot group by `{g}`; choose from {}",
                allowed.join(", ")
            ));
        }
    }
    if let Some(q) = r.quantile {
        if !(0.0..=1.0).contains(&q) {
            return err("quantile must be between 0 and 1".into());
        }
    }
    match r.kind {
        RuleKind::Latency
            if r.threshold.is_none() && (r.baseline.is_none() || r.factor.is_none()) =>
        {
            err("a latency rule needs `threshold` (ms) or `baseline` with `factor`".into())
        }
        RuleKind::ErrorRate if !matches!(r.threshold, Some(t) if (0.0..=1.0).contains(&t)) => {
            err("an error_rate rule needs `threshold` between 0 and 1".into())
        }
        RuleKind::Metric if r.series.as_deref().is_none_or(str::is_empty) => {
            err("a metric rule needs `series` (the OTLP metric's name)".into())
        }
        RuleKind::Metric if r.threshold.is_none() => err(
            "a metric rule needs `threshold` (in the series' unit, or percent with `ratio_to`)"
                .into(),
        ),
        RuleKind::Host if r.metric.is_none() => {
            err("a host rule needs `metric` (cpu, memory or disk)".into())
        }
        RuleKind::DbConnect if r.threshold.is_none() && r.connect_ms.is_none() => {
            err("a db_connect rule needs `threshold` (failures) or `connect_ms`".into())
        }
        RuleKind::ReplicationLag if r.threshold.is_none() && r.replay_paused == Some(false) => err(
            "a replication_lag rule needs `threshold` (seconds) or `replay_paused = true`".into(),
        ),
        RuleKind::AgentSilent | RuleKind::SpansDropped | RuleKind::FullScan | RuleKind::Host
            if r.threshold.is_none() =>
        {
            err("needs `threshold`".into())
        }
        _ => Ok(()),
    }
}

fn check_silence(s: &SilenceConfig) -> Result<(), String> {
    match (&s.daily, &s.from, &s.to) {
        (Some(d), None, None) => parse_daily(d).map(|_| ()),
        (None, Some(f), Some(t)) => {
            let fmt = &time::format_description::well_known::Rfc3339;
            let f = time::OffsetDateTime::parse(f, fmt)
                .map_err(|e| format!("silence `from` {f}: {e}"))?;
            let t = time::OffsetDateTime::parse(t, fmt)
                .map_err(|e| format!("silence `to` {t}: {e}"))?;
            if f >= t {
                return Err("silence: `from` must be before `to`".into());
            }
            Ok(())
        }
        _ => Err("a silence needs either `daily = \"HH:MM-HH:MM\"` or both `from` and `to`".into()),
    }
}

/// `"02:00-02:30"` → seconds of the day (start, end); the window may wrap midnight.
pub fn parse_daily(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("daily window `{text}` must look like 02:00-02:30 (UTC)");
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let hm = |s: &str| -> Result<u32, String> {
        let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
        let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if h > 23 || m > 59 {
            return Err(bad());
        }
        Ok(h * 3_600 + m * 60)
    };
    Ok((hm(a)?, hm(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn durations() {
        // The grammar's own tests are in model::duration; this checks the re-export.
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1min").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn defaults_resolve_and_secrets_come_from_the_environment() {
        let cfg: AlertsConfig = toml::from_str(
            r#"
            [[channels]]
            name = "oncall"
            type = "slack"
            url_env = "SW_TEST_HOOK"
            "#,
        )
        .unwrap();
        let missing = cfg.resolve("http://x", &no_env).unwrap_err();
        assert!(missing.contains("SW_TEST_HOOK"), "{missing}");
        let env = |k: &str| (k == "SW_TEST_HOOK").then(|| "http://hooks.invalid/secret".to_owned());
        let r = cfg.resolve("http://x", &env).unwrap();
        assert_eq!(r.rules.len(), default_rules().len());
        assert!(
            !format!("{r:?}").contains("hooks.invalid"),
            "the URL must never be printed"
        );
    }

    #[test]
    fn rule_errors_name_the_rule() {
        let cfg: AlertsConfig = toml::from_str(
            r#"
            [[rules]]
            name = "slow-db"
            kind = "latency"
            class = "db"
            "#,
        )
        .unwrap();
        let e = cfg.resolve("http://x", &no_env).unwrap_err();
        assert!(e.starts_with("rule `slow-db`"), "{e}");
        let cfg: AlertsConfig = toml::from_str("[[rules]]\nname = \"x\"\nkind = \"host\"\nthreshold = 90\nmetric = \"cpu\"\nchannels = [\"nope\"]\n").unwrap();
        assert!(cfg
            .resolve("http://x", &no_env)
            .unwrap_err()
            .contains("unknown channel `nope`"));
        assert!(parse_daily("25:00-01:00").is_err());
        assert_eq!(parse_daily("23:30-00:15").unwrap(), (84_600, 900));
    }
}
