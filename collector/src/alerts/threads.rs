//! Slack in bot mode: one message per incident and channel (its head), headed by the
//! probable cause in one line; the incident's alert messages go into its thread, and after
//! each of them the head is updated (`chat.update`) with the incident as it is then: the
//! cause worked out now, how many alerts joined, resolved. An incoming webhook can neither
//! thread nor update: there each alert message carries the cause line instead.
//!
//! The head is posted when the incident's first alert message is sent, recorded in
//! `sw_incident_threads` (the first recorded wins), and updated best-effort: a failed update
//! is logged and made good by the next one; the alert messages themselves go through the
//! outbox with its retries.

use serde_json::{json, Value};
use stormwatch_store::incidents::Incident;
use stormwatch_store::Store;

use super::wire::{slack_escape, utc, SEND_TIMEOUT};

/// Calls Slack's Web API `method`; its answer when `ok`.
async fn call(
    http: &reqwest::Client,
    api_url: &str,
    token: &str,
    method: &str,
    body: &Value,
) -> Result<Value, String> {
    let resp = http
        .post(format!("{}/{method}", api_url.trim_end_matches('/')))
        .bearer_auth(token)
        .json(body)
        .timeout(SEND_TIMEOUT)
        .send()
        .await
        // reqwest's error text can include the URL: keep the kind only.
        .map_err(|e| {
            if e.is_timeout() {
                "timed out".to_owned()
            } else {
                "connection failed".to_owned()
            }
        })?;
    let status = resp.status();
    let v: Value = resp
        .json()
        .await
        .map_err(|_| format!("HTTP {status}: not JSON"))?;
    if v["ok"] == Value::Bool(true) {
        Ok(v)
    } else {
        Err(format!(
            "Slack: {}",
            v["error"].as_str().unwrap_or("unknown error")
        ))
    }
}

/// The head of `i`'s thread: its state and probable cause in one line, its alerts, when it
/// happened before, and a link to its page.
pub fn head_message(i: &Incident, link: &str) -> Value {
    let cause = if i.cause_text.is_empty() {
        &i.title
    } else {
        &i.cause_text
    };
    let state = if i.resolved.is_some() {
        ":white_check_mark: RESOLVED"
    } else {
        ":rotating_light: OPEN"
    };
    let line = format!(
        "{state} · Incident #{} · probable cause: {}",
        i.id,
        slack_escape(cause)
    );
    let active = i.alerts.iter().filter(|a| a.resolved.is_none()).count();
    let mut context = vec![format!(
        "{} alert{} ({active} active) · began <!date^{}^{{date_short_pretty}} {{time_secs}}|{}>",
        i.alerts.len(),
        if i.alerts.len() == 1 { "" } else { "s" },
        i.opened as i64,
        utc(i.opened)
    )];
    context.extend(
        i.recurrence
            .iter()
            .map(|r| format!(":repeat: {}", slack_escape(r))),
    );
    json!({
        "text": line,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": line}},
            {"type": "context", "elements": context.iter().map(|c| json!({"type": "mrkdwn", "text": c})).collect::<Vec<_>>()},
            {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open the incident"}, "url": link}]},
        ],
    })
}

/// Where a bot channel.
pub struct Bot<'a> {
    pub http: &'a reqwest::Client,
    pub api_url: &'a str,
    pub token: &'a str,
    /// The channel as configured (`#oncall`).
    pub slack_channel: &'a str,
    /// The channel's name in collector.toml.
    pub name: &'a str,
}

/// The thread of `incident` in the bot's channel: the one recorded, or a new head posted now.
/// `None` (and a warning) when the head cannot be posted: the alert message then goes out on
/// its own.
pub async fn thread_for(
    store: &Store,
    bot: &Bot<'_>,
    incident: i64,
    link: &str,
) -> Option<(String, String)> {
    match store.incident_thread(incident, bot.name).await {
        Ok(Some(t)) => return Some(t),
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(%error, incident, "could not read the incident's Slack thread");
            return None;
        }
    }
    let i = store.incident(incident).await.ok().flatten()?;
    let mut body = head_message(&i, link);
    body["channel"] = json!(bot.slack_channel);
    match call(bot.http, bot.api_url, bot.token, "chat.postMessage", &body).await {
        Ok(v) => {
            let (Some(ch), Some(ts)) = (v["channel"].as_str(), v["ts"].as_str()) else {
                tracing::warn!(
                    incident,
                    "Slack answered the incident's head without channel or ts"
                );
                return None;
            };
            store
                .save_incident_thread(incident, bot.name, ch, ts)
                .await
                .map_err(|error| tracing::warn!(%error, incident, "could not record the incident's Slack thread"))
                .ok()
        }
        Err(error) => {
            tracing::warn!(channel = bot.name, incident, %error, "could not post the incident's head message; its alerts go out on their own");
            None
        }
    }
}

/// Rewrites the head of `incident`'s thread with the incident as it is now (best-effort).
pub async fn refresh_head(
    store: &Store,
    bot: &Bot<'_>,
    incident: i64,
    (slack_channel, ts): &(String, String),
    link: &str,
) {
    let Ok(Some(i)) = store.incident(incident).await else {
        return;
    };
    let mut body = head_message(&i, link);
    body["channel"] = json!(slack_channel);
    body["ts"] = json!(ts);
    if let Err(error) = call(bot.http, bot.api_url, bot.token, "chat.update", &body).await {
        tracing::warn!(channel = bot.name, incident, %error, "could not update the incident's head message");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stormwatch_store::incidents::IncidentAlert;

    #[test]
    fn the_head_says_state_cause_alerts_and_recurrence_escaped() {
        let alert = |resolved: Option<f64>| IncidentAlert {
            rule: "r".into(),
            labels_key: String::new(),
            labels: Default::default(),
            severity: "critical".into(),
            summary: "s".into(),
            started: 1_790_000_000.0,
            joined: 1_790_000_000.0,
            resolved,
        };
        let mut i = Incident {
            id: 12,
            opened: 1_790_000_000.0,
            resolved: None,
            title: "t".into(),
            cause_text: "Redis <!channel> p95 948 ms".into(),
            cause: Value::Null,
            cause_updated: None,
            recurrence: vec![
                "board-primary refused connections 10:00–10:12 UTC on 6 of the last 7 days".into(),
            ],
            alerts: vec![alert(None), alert(Some(1_790_000_100.0))],
        };
        let m = head_message(&i, "http://sw/incidents/12");
        let text = m["text"].as_str().unwrap();
        assert_eq!(
            text,
            ":rotating_light: OPEN · Incident #12 · probable cause: Redis &lt;!channel&gt; p95 948 ms"
        );
        let context = m["blocks"][1].to_string();
        assert!(context.contains("2 alerts (1 active)"), "{context}");
        assert!(context.contains(":repeat: board-primary refused connections 10:00"));
        i.resolved = Some(1_790_000_200.0);
        assert!(head_message(&i, "x")["text"]
            .as_str()
            .unwrap()
            .starts_with(":white_check_mark: RESOLVED · Incident #12"));
    }
}
