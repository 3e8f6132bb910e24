//! Delivering notifications: Slack (incoming webhook with Block Kit, or `chat.postMessage` with
//! a bot token, an incident's messages threaded under its head: `threads`) and a generic JSON
//! webhook.
//! Retries with backoff, honours `Retry-After`, limits the rate per channel, and records every
//! failure — an alert is never lost silently.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};
use stormwatch_store::alerts::{Claim, EventRow, Notification, Term};
use stormwatch_store::incidents::IncidentRef;
use stormwatch_store::{Store, StoreError};

use super::config::{ChannelKind, Resolved, RuleKind, Target};
use super::threads;
pub use super::wire::slack_escape;
use super::wire::{utc, SEND_TIMEOUT};
use crate::metrics::Metrics;

/// Schema name of the generic webhook payload (documented in README.md).
pub const WEBHOOK_SCHEMA: &str = "stormwatch.alerts/v2";
/// Most alerts listed in one Slack message; the rest are counted.
const MAX_LISTED: usize = 10;

/// How long a claim on notifications lasts: longer than a send can take ([`SEND_TIMEOUT`])
/// plus recording its result, so a claim only expires when its holder died or stalled — then
/// the next leader sends the notifications again.
pub const CLAIM_FOR: Duration = Duration::from_secs(30);

/// Why a delivery did not go through.
#[derive(Debug)]
pub enum DeliveryError {
    /// Try again after this long (429 `Retry-After`, 5xx, network).
    Retry { after: Duration, error: String },
    /// Retrying will not help (4xx, Slack `ok: false`).
    Permanent(String),
}

/// Per-channel send times within the last minute (the rate limit).
#[derive(Default)]
pub struct RateLimiter {
    sent: Mutex<HashMap<String, VecDeque<f64>>>,
}

impl RateLimiter {
    fn allow(&self, channel: &str, limit: u32, now: f64) -> bool {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let q = sent.entry(channel.to_owned()).or_default();
        while q.front().is_some_and(|t| now - t >= 60.0) {
            q.pop_front();
        }
        if q.len() >= limit as usize {
            return false;
        }
        q.push_back(now);
        true
    }
}

fn emoji(event: &str, severity: &str) -> &'static str {
    match (event, severity) {
        ("resolved", _) => "✅",
        (_, "critical") => "🔴",
        (_, "warning") => "🟠",
        _ => "🔵",
    }
}

fn duration_text(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3_599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3_600, (s % 3_600) / 60),
    }
}

/// The page of incident `id`.
pub fn incident_link(base: &str, id: i64) -> String {
    format!("{}/incidents/{id}", base.trim_end_matches('/'))
}

/// The dashboard view and window that explains an alert.
pub fn dashboard_link(base: &str, kind: Option<RuleKind>, e: &EventRow) -> String {
    // A metric alert opens its service's metrics page (the service is in the path).
    let service_metrics;
    let path = match kind {
        Some(RuleKind::Metric) => {
            let service = e.labels.get("service").map_or("", String::as_str);
            service_metrics = format!("/services/{}/metrics", url_escape(service));
            service_metrics.as_str()
        }
        Some(RuleKind::Latency | RuleKind::ErrorRate) => "/dependencies",
        Some(RuleKind::ReplicationLag | RuleKind::DbConnect) => "/databases",
        Some(RuleKind::FullScan) => "/spans",
        Some(RuleKind::Host) => "/hosts",
        Some(RuleKind::AgentSilent | RuleKind::SpansDropped) => "/",
        None => "/alerts",
    };
    let from_ms = ((e.since - 900.0) * 1000.0) as i64;
    let to_ms = ((e.time + 300.0) * 1000.0) as i64;
    let mut url = format!("{base}{path}?from={from_ms}&to={to_ms}");
    for (k, v) in &e.labels {
        if kind == Some(RuleKind::Metric) {
            break;
        }
        if ["service", "class", "peer", "database", "host"].contains(&k.as_str()) && !v.is_empty() {
            url.push_str(&format!("&{k}={}", url_escape(v)));
        }
    }
    url
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Slack message (Block Kit with a plain `text` fallback) for a group of notifications of
/// one kind (all firing, or all resolved); an alert that belongs to an incident (`incidents`,
/// by position) gains its probable cause. Every interpolated value is [`slack_escape`]d,
/// except in `plain_text` objects, which Slack does not parse.
pub fn slack_message(
    group: &[&EventRow],
    links: &[String],
    incidents: &[Option<IncidentRef>],
) -> Value {
    let incident_of = |i: usize| incidents.get(i).and_then(Option::as_ref);
    let first = group[0];
    let n = group.len();
    let verb = match first.event.as_str() {
        "resolved" => "RESOLVED",
        "renotify" => "STILL FIRING",
        _ => "FIRING",
    };
    let title = if n == 1 {
        format!(
            "{} {verb} · {} · {}",
            emoji(&first.event, &first.severity),
            first.severity,
            first.rule
        )
    } else {
        format!(
            "{} {verb} · {n} alerts · {}",
            emoji(&first.event, &first.severity),
            first.rule
        )
    };
    let summary = slack_escape(&first.summary);
    let mut text = if n == 1 {
        format!("{}: {summary}", slack_escape(&title))
    } else {
        format!("{}: {summary} and {} more", slack_escape(&title), n - 1)
    };
    if let Some(i) = incident_of(0).filter(|i| !i.cause.is_empty()) {
        text.push_str(&format!(" · probable cause: {}", slack_escape(&i.cause)));
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&title, 150), "emoji": true}}),
    ];
    for (at, (e, link)) in group.iter().zip(links).take(MAX_LISTED).enumerate() {
        let mut fields = Vec::new();
        for (k, v) in &e.labels {
            if !v.is_empty() {
                let (k, v) = (slack_escape(k), slack_escape(v));
                fields.push(
                    json!({"type": "mrkdwn", "text": truncate(&format!("*{k}*\n{v}"), 2000)}),
                );
            }
        }
        if let Some(v) = e.value {
            let t = e
                .threshold
                .map(|t| format!(" (threshold {})", fmt_num(t)))
                .unwrap_or_default();
            fields.push(json!({"type": "mrkdwn", "text": format!("*value*\n{}{t}", fmt_num(v))}));
        }
        let when = if e.event == "resolved" {
            format!("*resolved after*\n{}", duration_text(e.time - e.since))
        } else {
            format!(
                "*since*\n<!date^{}^{{date_short_pretty}} {{time_secs}}|{}>",
                e.since as i64,
                utc(e.since)
            )
        };
        fields.push(json!({"type": "mrkdwn", "text": when}));
        fields.truncate(10);
        let summary = if e.event == "resolved" {
            // The resolve's own summary: the value now and what it peaked at.
            slack_escape(&e.summary)
        } else {
            format!("*{}*", slack_escape(&e.summary))
        };
        let mut summary = match incident_of(at) {
            Some(i) if !i.cause.is_empty() => format!(
                "{summary}\nIncident #{} · probable cause: {}",
                i.id,
                slack_escape(&i.cause)
            ),
            _ => summary,
        };
        if let Some(i) = incident_of(at).filter(|_| e.event != "resolved") {
            for r in &i.recurrence {
                summary.push_str(&format!("\n:repeat: {}", slack_escape(r)));
            }
        }
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": truncate(&summary, 3000)},
            "fields": fields,
        }));
        blocks.push(json!({
            "type": "actions",
            "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open in Stormwatch"}, "url": truncate(link, 3000)}],
        }));
    }
    if n > MAX_LISTED {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("…and {} more", n - MAX_LISTED)}]}));
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("Stormwatch · {}", utc(first.time))}]}));
    json!({"text": text, "blocks": blocks})
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() < 1.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.1}")
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max_chars - 1).collect();
    out.push('…');
    out
}

/// The generic webhook body (schema [`WEBHOOK_SCHEMA`]). An alert that belongs to an incident
/// (`incidents`, by position) carries `incident`: its id, title and probable cause.
pub fn webhook_payload(
    group_key: &str,
    group: &[&EventRow],
    links: &[String],
    incidents: &[Option<IncidentRef>],
) -> Value {
    let alerts: Vec<Value> = group
        .iter()
        .zip(links)
        .enumerate()
        .map(|(at, (e, link))| {
            let mut a = json!({
                "rule": e.rule,
                "event": e.event,
                "severity": e.severity,
                "labels": e.labels,
                "value": e.value,
                "threshold": e.threshold,
                "summary": e.summary,
                "since": utc(e.since),
                "at": utc(e.time),
                "dashboard_url": link,
            });
            if let Some(i) = incidents.get(at).and_then(Option::as_ref) {
                a["incident"] = json!({
                    "id": i.id,
                    "title": i.title,
                    "cause": i.cause,
                    "recurrence": i.recurrence,
                });
            }
            a
        })
        .collect();
    json!({"schema": WEBHOOK_SCHEMA, "group_key": group_key, "alerts": alerts})
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|s| Duration::from_secs_f64(s.clamp(0.0, 3_600.0)))
}

fn backoff(attempts: i32) -> Duration {
    let base = 2f64.powi(attempts.clamp(0, 8)).min(300.0);
    Duration::from_secs_f64(base * (0.5 + fastrand::f64()))
}

async fn post(
    http: &reqwest::Client,
    target: &Target,
    body: &Value,
    attempts: i32,
) -> Result<Option<String>, DeliveryError> {
    let req = match target {
        Target::Webhook { url } => http.post(url).json(body),
        Target::SlackBot { api_url, token, .. } => http
            .post(format!(
                "{}/chat.postMessage",
                api_url.trim_end_matches('/')
            ))
            .bearer_auth(token)
            .json(body),
    };
    let resp = req
        .timeout(SEND_TIMEOUT)
        .send()
        .await
        .map_err(|e| DeliveryError::Retry {
            after: backoff(attempts),
            // reqwest's error text can include the URL, which is a secret: keep only the kind.
            error: if e.is_timeout() {
                "timed out".into()
            } else if e.is_connect() {
                "connection failed".into()
            } else {
                "request failed".into()
            },
        })?;
    let status = resp.status();
    if status.as_u16() == 429 {
        let after = retry_after(&resp).unwrap_or(Duration::from_secs(1));
        return Err(DeliveryError::Retry {
            after,
            error: format!(
                "429 Too Many Requests (retry after {:.0} s)",
                after.as_secs_f64()
            ),
        });
    }
    if status.is_server_error() {
        return Err(DeliveryError::Retry {
            after: retry_after(&resp).unwrap_or_else(|| backoff(attempts)),
            error: format!("HTTP {status}"),
        });
    }
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(DeliveryError::Permanent(format!(
            "HTTP {status}: {}",
            truncate(&text, 200)
        )));
    }
    if let Target::SlackBot { .. } = target {
        let v: Value = resp
            .json()
            .await
            .map_err(|e| DeliveryError::Permanent(format!("Slack answered non-JSON: {e}")))?;
        if v["ok"] != Value::Bool(true) {
            let err = v["error"].as_str().unwrap_or("unknown error").to_owned();
            if err == "ratelimited" {
                return Err(DeliveryError::Retry {
                    after: Duration::from_secs(1),
                    error: err,
                });
            }
            return Err(DeliveryError::Permanent(format!("Slack: {err}")));
        }
        return Ok(v["ts"].as_str().map(str::to_owned));
    }
    Ok(None)
}

/// Sends what is due; returns how many notifications were delivered.
///
/// Each group is claimed (under `term`) right before it is sent, and only what the claim got
/// is sent; the result is recorded under that claim. [`StoreError::Fenced`] when `term` is no
/// longer the leader's: the caller must stop delivering.
#[allow(clippy::too_many_arguments)]
pub async fn deliver_due(
    store: &Store,
    term: &Term,
    cfg: &Resolved,
    http: &reqwest::Client,
    limiter: &RateLimiter,
    metrics: &Metrics,
    now: f64,
) -> Result<usize, StoreError> {
    // `now` is the evaluation's clock (tests shift it); a retry counts from the moment its
    // answer arrived, which is later than `now` by however long the sends before it took.
    let started = std::time::Instant::now();
    let due = store.due_notifications(now, 500).await?;
    // One message per channel, tick, kind of event and (for threads) firing message.
    let mut groups: BTreeMap<(String, String, String, Option<String>), Vec<Notification>> =
        BTreeMap::new();
    for n in due {
        let key = (
            n.channel.clone(),
            n.group_key.clone(),
            n.event.event.clone(),
            n.thread_ts.clone(),
        );
        groups.entry(key).or_default().push(n);
    }
    let mut delivered = 0;
    for ((channel_name, group_key, _, thread_ts), mut notes) in groups {
        let channel = cfg.channels.iter().find(|c| c.name == channel_name);
        if let Some(channel) = channel {
            if !limiter.allow(&channel.name, channel.rate_limit_per_minute, now) {
                continue; // stays pending: sent when the window has room again
            }
        }
        let ids: Vec<i64> = notes.iter().map(|n| n.id).collect();
        let claim = store.claim_notifications(term, &ids, CLAIM_FOR).await?;
        // What another collector claimed meanwhile is its to send.
        notes.retain(|n| claim.ids.contains(&n.id));
        if notes.is_empty() {
            continue;
        }
        let Some(channel) = channel else {
            store
                .mark_attempt_failed(&claim, "channel is no longer configured", None)
                .await?;
            metrics.notification(&channel_name, "failed", claim.ids.len());
            continue;
        };
        let events: Vec<&EventRow> = notes.iter().map(|n| &n.event).collect();
        let links: Vec<String> = events
            .iter()
            .map(|e| {
                dashboard_link(
                    &cfg.dashboard_url,
                    cfg.rules.iter().find(|r| r.name == e.rule).map(|r| r.kind),
                    e,
                )
            })
            .collect();
        // The incident each alert belongs to; a failed look-up sends the alerts without.
        let keys: Vec<(String, String, f64)> = events
            .iter()
            .map(|e| (e.rule.clone(), e.labels_key.clone(), e.time))
            .collect();
        let by_alert = store
            .incidents_of_alerts(&keys)
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "could not read the incidents of alerts being sent");
                Default::default()
            });
        let incidents: Vec<Option<IncidentRef>> = events
            .iter()
            .map(|e| {
                by_alert
                    .get(&(e.rule.clone(), e.labels_key.clone()))
                    .cloned()
            })
            .collect();
        let mut body = match channel.kind {
            ChannelKind::Slack => slack_message(&events, &links, &incidents),
            ChannelKind::Webhook => webhook_payload(&group_key, &events, &links, &incidents),
        };
        // Bot mode: the alerts of one incident go into its thread (see `threads`); other
        // alerts' resolves go into their firing message's thread.
        let mut incident_thread = None;
        if let Target::SlackBot {
            api_url,
            token,
            channel: slack_channel,
        } = &channel.target
        {
            body["channel"] = json!(slack_channel);
            let bot = threads::Bot {
                http,
                api_url,
                token,
                slack_channel,
                name: &channel.name,
            };
            let common = incidents.first().cloned().flatten().filter(|i| {
                incidents
                    .iter()
                    .all(|x| x.as_ref().is_some_and(|x| x.id == i.id))
            });
            if let Some(i) = common {
                let link = incident_link(&cfg.dashboard_url, i.id);
                if let Some(t) = threads::thread_for(store, &bot, i.id, &link).await {
                    body["thread_ts"] = json!(t.1);
                    incident_thread = Some((i.id, t, link));
                }
            }
            if let (None, Some(ts)) = (&incident_thread, &thread_ts) {
                if notes[0].event.event != "firing" {
                    body["thread_ts"] = json!(ts);
                }
            }
        }
        let attempts = notes.iter().map(|n| n.attempts).max().unwrap_or(0);
        let n = claim.ids.len();
        let answer = post(http, &channel.target, &body, attempts).await;
        let answered = now + started.elapsed().as_secs_f64();
        match answer {
            Ok(ts) => {
                if let (
                    Some((id, thread, link)),
                    Target::SlackBot {
                        api_url,
                        token,
                        channel: slack_channel,
                    },
                ) = (&incident_thread, &channel.target)
                {
                    let bot = threads::Bot {
                        http,
                        api_url,
                        token,
                        slack_channel,
                        name: &channel.name,
                    };
                    threads::refresh_head(store, &bot, *id, thread, link).await;
                }
                let ts = if notes[0].event.event == "firing" {
                    ts
                } else {
                    None
                };
                let recorded = store.mark_sent(&claim, ts.as_deref(), answered).await?;
                lost_claim(&claim, recorded, &channel.name);
                metrics.notification(&channel.name, "sent", n);
                delivered += n;
            }
            Err(DeliveryError::Retry { after, error })
                if attempts + 1 < channel.max_attempts as i32 =>
            {
                tracing::warn!(channel = %channel.name, attempts = attempts + 1, %error, retry_in_s = after.as_secs_f64(), "alert delivery failed; will retry");
                let recorded = store
                    .mark_attempt_failed(&claim, &error, Some(answered + after.as_secs_f64()))
                    .await?;
                lost_claim(&claim, recorded, &channel.name);
                metrics.notification(&channel.name, "retried", n);
            }
            Err(DeliveryError::Retry { error, .. }) | Err(DeliveryError::Permanent(error)) => {
                tracing::error!(channel = %channel.name, attempts = attempts + 1, %error, "alert delivery failed for good; recorded as failed");
                let recorded = store.mark_attempt_failed(&claim, &error, None).await?;
                lost_claim(&claim, recorded, &channel.name);
                metrics.notification(&channel.name, "failed", n);
            }
        }
    }
    Ok(delivered)
}

/// Rewrites incident `id`'s head in every bot channel that has its thread (a cause that
/// changed between alert messages).
pub async fn refresh_heads(store: &Store, cfg: &Resolved, http: &reqwest::Client, id: i64) {
    for channel in &cfg.channels {
        let Target::SlackBot {
            api_url,
            token,
            channel: slack_channel,
        } = &channel.target
        else {
            continue;
        };
        let Ok(Some(thread)) = store.incident_thread(id, &channel.name).await else {
            continue;
        };
        let bot = threads::Bot {
            http,
            api_url,
            token,
            slack_channel,
            name: &channel.name,
        };
        threads::refresh_head(
            store,
            &bot,
            id,
            &thread,
            &incident_link(&cfg.dashboard_url, id),
        )
        .await;
    }
}

/// A result recorded for fewer notifications than were claimed: the claim expired during the
/// send (this collector stalled past [`CLAIM_FOR`]) and another leader took them again, so
/// they may be sent twice.
fn lost_claim(claim: &Claim, recorded: u64, channel: &str) {
    if recorded < claim.ids.len() as u64 {
        tracing::warn!(
            channel,
            claimed = claim.ids.len(),
            recorded,
            "alert delivery outlived its claim; another leader may send it again"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str) -> EventRow {
        EventRow {
            id: 1,
            time: 1_790_000_100.0,
            rule: "redis-p95".into(),
            labels_key: "peer=redis:6379,service=board".into(),
            labels: [
                ("service".to_owned(), "board".to_owned()),
                ("peer".to_owned(), "redis:6379".to_owned()),
            ]
            .into(),
            event: name.into(),
            severity: "critical".into(),
            value: Some(84.2),
            threshold: Some(20.0),
            summary: "p95 of redis of board → redis:6379 is 84.2 ms (threshold 20.0 ms, 120 spans)"
                .into(),
            since: 1_790_000_000.0,
            silenced: false,
        }
    }

    #[test]
    fn rate_limit_per_channel_and_minute() {
        let l = RateLimiter::default();
        assert!((0..3).all(|i| l.allow("a", 3, 100.0 + i as f64)));
        assert!(
            !l.allow("a", 3, 103.0),
            "the fourth message within a minute waits"
        );
        assert!(l.allow("b", 3, 103.0), "channels are limited separately");
        assert!(
            l.allow("a", 3, 160.5),
            "a minute after the first, there is room again"
        );
    }

    /// Every string Slack parses as mrkdwn in `m`: the fallback and `mrkdwn` text objects.
    fn parsed_texts(m: &Value, out: &mut Vec<String>) {
        match m {
            Value::Object(o) => {
                if o.get("type").and_then(Value::as_str) == Some("mrkdwn") {
                    out.push(o["text"].as_str().unwrap_or_default().to_owned());
                }
                for v in o.values() {
                    parsed_texts(v, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|v| parsed_texts(v, out)),
            _ => {}
        }
    }

    #[test]
    fn span_derived_labels_cannot_mention_or_link_in_slack() {
        for event_name in ["firing", "resolved"] {
            let mut e = event(event_name);
            e.labels.insert("peer".into(), "<!channel>".into());
            e.labels
                .insert("<!here>".into(), "<https://evil.example|click> & co".into());
            e.summary = "p95 of <@U123> → <!channel> is 84 ms".into();
            let cause = Some(IncidentRef {
                id: 3,
                title: "t".into(),
                cause: "Redis <!channel> p95 948 ms".into(),
                recurrence: vec![
                    "cache <!here> fired 10:00–10:05 UTC on 2 of the last 7 days".into(),
                ],
            });
            let m = slack_message(
                &[&e, &e],
                &["http://sw/".into(), "http://sw/".into()],
                &[cause.clone(), cause],
            );
            let mut texts = vec![m["text"].as_str().unwrap().to_owned()];
            parsed_texts(&m, &mut texts);
            assert!(texts.len() > 4);
            let all = texts.join("\n");
            for raw in ["<!channel>", "<!here>", "<https://evil", "<@U123>", "& co"] {
                assert!(!all.contains(raw), "{raw} reached Slack unescaped: {all}");
            }
            assert!(all.contains("&lt;!channel&gt;"), "{all}");
            assert!(
                all.contains("&lt;https://evil.example|click&gt; &amp; co"),
                "{all}"
            );
            // Our own markup still works: the date token in "since".
            if event_name == "firing" {
                assert!(all.contains("<!date^"), "{all}");
            }
        }
    }

    #[test]
    fn block_kit_shape() {
        let e = event("firing");
        let link = dashboard_link("http://sw:6100", Some(RuleKind::Latency), &e);
        assert!(
            link.starts_with("http://sw:6100/dependencies?from=1789999100000&to=1790000400000"),
            "{link}"
        );
        assert!(link.contains("&peer=redis%3A6379"), "{link}");
        let m = slack_message(&[&e], &[link], &[]);
        assert!(m["text"].as_str().unwrap().contains("FIRING"));
        let blocks = m["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        for b in blocks {
            assert!(
                ["header", "section", "actions", "context"].contains(&b["type"].as_str().unwrap())
            );
            if let Some(fields) = b["fields"].as_array() {
                assert!(fields.len() <= 10 && fields.iter().all(|f| f["type"] == "mrkdwn"));
            }
        }
        let resolved = slack_message(&[&event("resolved")], &["http://x".into()], &[]);
        assert!(resolved["text"].as_str().unwrap().contains("RESOLVED"));
    }

    #[test]
    fn alerts_of_an_incident_carry_it_and_its_cause() {
        let e = event("firing");
        let i = IncidentRef {
            id: 12,
            title: "redis slow".into(),
            cause: "Redis cache p95 948 ms, ×600 its usual, explains 91 % of the added latency of GET /items".into(),
            recurrence: vec![
                "board-primary refused connections 10:00–10:12 UTC on 6 of the last 7 days".into(),
            ],
        };
        let w = webhook_payload(
            "g",
            &[&e, &e],
            &["http://a".into(), "http://b".into()],
            &[Some(i.clone()), None],
        );
        assert_eq!(w["schema"], WEBHOOK_SCHEMA);
        assert_eq!(w["alerts"][0]["incident"]["id"], 12);
        assert_eq!(w["alerts"][0]["incident"]["cause"], i.cause.as_str());
        assert_eq!(
            w["alerts"][0]["incident"]["recurrence"][0],
            "board-primary refused connections 10:00–10:12 UTC on 6 of the last 7 days"
        );
        assert!(w["alerts"][1].get("incident").is_none());
        let m = slack_message(&[&e], &["http://a".into()], &[Some(i)]);
        assert!(m["text"]
            .as_str()
            .unwrap()
            .contains("probable cause: Redis cache p95 948 ms"));
        let section = m["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(
            section.contains("Incident #12 · probable cause: Redis cache"),
            "{section}"
        );
        assert!(
            section.contains(":repeat: board-primary refused connections 10:00–10:12 UTC on 6"),
            "{section}"
        );
    }
}
