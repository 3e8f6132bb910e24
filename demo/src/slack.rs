//! The local Slack stand-in: an HTTP receiver the collector's alert channels post to, and a
//! page that shows the Block Kit messages as Slack would list them in a channel.
//!
//! - `POST /slack`: a Slack incoming-webhook body (Block Kit with a `text` fallback).
//! - `POST /webhook`: a generic webhook body (`stormwatch.alerts/v2`).
//! - `GET /`: the channel, newest message first (refreshes every 5 s, no script).
//! - `GET /messages.json`: everything received, with the time it arrived (tests read this).
//!
//! At most [`MAX_MESSAGES`] are kept (the oldest are dropped and counted).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;

/// Messages kept in memory.
pub const MAX_MESSAGES: usize = 2_000;

/// One message as received.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Received {
    /// Arrival, Unix milliseconds.
    pub at_ms: i64,
    /// `slack` or `webhook`.
    pub kind: String,
    pub body: Value,
}

#[derive(Default)]
struct Inbox {
    messages: Vec<Received>,
    dropped: u64,
}

/// The running receiver.
#[derive(Clone)]
pub struct SlackPage {
    pub addr: SocketAddr,
    inbox: Arc<Mutex<Inbox>>,
}

impl SlackPage {
    /// Binds `listen` and serves until the runtime ends or [`SlackPage::shutdown`].
    pub async fn start(
        listen: SocketAddr,
    ) -> anyhow::Result<(SlackPage, tokio::task::JoinHandle<()>)> {
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("Slack page: listening on {listen}: {e}"))?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/", get(page))
            .route("/messages.json", get(messages))
            .route("/slack", post(receive_slack))
            .route("/webhook", post(receive_webhook))
            .with_state(inbox.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::warn!(%error, "Slack page stopped");
            }
        });
        Ok((SlackPage { addr, inbox }, task))
    }

    /// Everything received so far.
    pub fn messages(&self) -> Vec<Received> {
        self.inbox.lock().expect("inbox").messages.clone()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn record(inbox: &Mutex<Inbox>, kind: &str, body: Value) {
    let mut inbox = inbox.lock().expect("inbox");
    if inbox.messages.len() >= MAX_MESSAGES {
        inbox.messages.remove(0);
        inbox.dropped += 1;
    }
    inbox.messages.push(Received {
        at_ms: now_ms(),
        kind: kind.to_owned(),
        body,
    });
}

async fn receive_slack(
    State(inbox): State<Arc<Mutex<Inbox>>>,
    Json(body): Json<Value>,
) -> &'static str {
    if let Some(text) = body.get("text").and_then(Value::as_str) {
        tracing::info!(target: "slack", "{text}");
    }
    record(&inbox, "slack", body);
    "ok"
}

async fn receive_webhook(
    State(inbox): State<Arc<Mutex<Inbox>>>,
    Json(body): Json<Value>,
) -> &'static str {
    record(&inbox, "webhook", body);
    "ok"
}

async fn messages(State(inbox): State<Arc<Mutex<Inbox>>>) -> Json<Vec<Received>> {
    Json(inbox.lock().expect("inbox").messages.clone())
}

async fn page(State(inbox): State<Arc<Mutex<Inbox>>>) -> impl IntoResponse {
    let (list, dropped) = {
        let inbox = inbox.lock().expect("inbox");
        (
            inbox
                .messages
                .iter()
                .filter(|m| m.kind == "slack")
                .rev()
                .cloned()
                .collect::<Vec<_>>(),
            inbox.dropped,
        )
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        Html(render_page(&list, dropped)),
    )
}

/// HTML-escapes text (the dashboard's escaping: the same five characters).
pub use stormwatch_web::charts::xml_escape as escape;

/// Slack `mrkdwn` to HTML: `<url|text>` links and `<!date^…|fallback>` first, then the text
/// escaped, then `*bold*`, `~strike~`, `` `code` `` and line breaks.
pub fn mrkdwn(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        out.push_str(&inline(&rest[..open]));
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else {
            out.push_str(&inline(&rest[open..]));
            rest = "";
            break;
        };
        let inner = &after[..close];
        let (target, label) = inner.split_once('|').unwrap_or((inner, inner));
        if target.starts_with('!') {
            out.push_str(&escape(label));
        } else if target.starts_with("http://") || target.starts_with("https://") {
            out.push_str(&format!(
                "<a href=\"{}\">{}</a>",
                escape(target),
                escape(label)
            ));
        } else {
            out.push_str(&escape(label));
        }
        rest = &after[close + 1..];
    }
    out.push_str(&inline(rest));
    out
}

fn inline(text: &str) -> String {
    let mut s = escape(text);
    for (mark, tag) in [('*', "b"), ('~', "s"), ('`', "code")] {
        let parts: Vec<&str> = s.split(mark).collect();
        if parts.len() >= 3 {
            let mut t = String::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    // Odd separators open, even ones close; an unpaired last one stays.
                    if i == parts.len() - 1 && i % 2 == 1 {
                        t.push(mark);
                    } else if i % 2 == 1 {
                        t.push_str(&format!("<{tag}>"));
                    } else {
                        t.push_str(&format!("</{tag}>"));
                    }
                }
                t.push_str(p);
            }
            s = t;
        }
    }
    s.replace('\n', "<br>")
}

fn text_of(v: &Value) -> String {
    match v.get("type").and_then(Value::as_str) {
        Some("mrkdwn") => mrkdwn(v.get("text").and_then(Value::as_str).unwrap_or("")),
        _ => escape(v.get("text").and_then(Value::as_str).unwrap_or("")),
    }
}

/// One Block Kit message as HTML.
pub fn render_message(body: &Value, at_ms: i64) -> String {
    let mut html = String::new();
    let blocks = body.get("blocks").and_then(Value::as_array);
    let header = blocks
        .and_then(|b| b.iter().find(|x| x["type"] == "header"))
        .map(|h| escape(h["text"]["text"].as_str().unwrap_or("")))
        .unwrap_or_default();
    let class = if header.contains("RESOLVED") {
        "resolved"
    } else {
        "firing"
    };
    html.push_str(&format!(
        "<article class=\"msg {class}\"><div class=\"avatar\">SW</div><div class=\"content\">\
         <div class=\"who\"><b>Stormwatch</b> <span class=\"app\">APP</span> <time>{}</time></div>",
        utc_time(at_ms)
    ));
    match blocks {
        Some(blocks) => {
            for b in blocks {
                match b["type"].as_str() {
                    Some("header") => html.push_str(&format!(
                        "<h3>{}</h3>",
                        escape(b["text"]["text"].as_str().unwrap_or(""))
                    )),
                    Some("section") => {
                        html.push_str("<section>");
                        if let Some(t) = b.get("text") {
                            html.push_str(&format!("<p>{}</p>", text_of(t)));
                        }
                        if let Some(fields) = b.get("fields").and_then(Value::as_array) {
                            html.push_str("<div class=\"fields\">");
                            for f in fields {
                                html.push_str(&format!("<div>{}</div>", text_of(f)));
                            }
                            html.push_str("</div>");
                        }
                        html.push_str("</section>");
                    }
                    Some("actions") => {
                        html.push_str("<div class=\"actions\">");
                        for e in b["elements"].as_array().into_iter().flatten() {
                            let url = e["url"].as_str().unwrap_or("#");
                            html.push_str(&format!(
                                "<a class=\"button\" href=\"{}\">{}</a>",
                                escape(url),
                                escape(e["text"]["text"].as_str().unwrap_or("open"))
                            ));
                        }
                        html.push_str("</div>");
                    }
                    Some("context") => {
                        html.push_str("<div class=\"context\">");
                        for e in b["elements"].as_array().into_iter().flatten() {
                            html.push_str(&text_of(e));
                        }
                        html.push_str("</div>");
                    }
                    Some("divider") => html.push_str("<hr>"),
                    _ => {}
                }
            }
        }
        None => html.push_str(&format!(
            "<p>{}</p>",
            mrkdwn(body.get("text").and_then(Value::as_str).unwrap_or(""))
        )),
    }
    html.push_str("</div></article>\n");
    html
}

fn utc_time(ms: i64) -> String {
    let s = ms.div_euclid(1000);
    let day = s.rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02} UTC",
        day / 3600,
        day % 3600 / 60,
        day % 60
    )
}

const STYLE: &str = "body{margin:0;font:15px/1.46 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#1d1c1d;background:#fff}\
header{background:#3f0e40;color:#fff;padding:10px 20px;font-weight:700}\
header small{font-weight:400;opacity:.8;margin-left:12px}\
main{max-width:900px;padding:8px 20px}\
.msg{display:flex;gap:10px;padding:10px 6px;border-bottom:1px solid #eee}\
.msg:hover{background:#f8f8f8}\
.avatar{flex:0 0 36px;height:36px;border-radius:4px;background:#0072b2;color:#fff;font-weight:700;display:flex;align-items:center;justify-content:center}\
.firing .content{border-left:4px solid #d55e00;padding-left:10px}\
.resolved .content{border-left:4px solid #009e73;padding-left:10px}\
.content{flex:1}\
.who time{color:#616061;font-size:12px;margin-left:4px}\
.app{background:#e8e8e8;color:#616061;font-size:10px;padding:1px 3px;border-radius:2px}\
h3{margin:4px 0;font-size:16px}\
.fields{display:grid;grid-template-columns:1fr 1fr;gap:6px 16px;margin:6px 0}\
.actions{margin:6px 0}\
.button{display:inline-block;border:1px solid #ccc;border-radius:4px;padding:3px 12px;color:#1d1c1d;text-decoration:none;font-weight:700;font-size:13px}\
.context{color:#616061;font-size:12px}\
code{background:#f6f6f6;border:1px solid #ddd;border-radius:3px;padding:0 3px;color:#c7254e}\
.empty{color:#616061;padding:20px 0}";

/// The channel page.
pub fn render_page(newest_first: &[Received], dropped: u64) -> String {
    let mut html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"5\"><link rel=\"icon\" href=\"data:,\"><title>#oncall · Stormwatch alerts</title>\
         <style>{STYLE}</style></head><body><header># oncall \
         <small>Stormwatch alerts as Slack shows them · {} message{} · refreshes every 5 s</small></header><main>",
        newest_first.len(),
        if newest_first.len() == 1 { "" } else { "s" }
    );
    if newest_first.is_empty() {
        html.push_str("<p class=\"empty\">No alert yet. The scenario's first incident starts within a minute.</p>");
    }
    for m in newest_first {
        html.push_str(&render_message(&m.body, m.at_ms));
    }
    if dropped > 0 {
        html.push_str(&format!(
            "<p class=\"context\">{dropped} older messages are no longer kept.</p>"
        ));
    }
    html.push_str("</main></body></html>");
    html
}

/// Alerts as the webhook channel received them: (arrival ms, rule, event, summary, labels as
/// text).
pub fn webhook_alerts(messages: &[Received]) -> Vec<(i64, String, String, String, String)> {
    let mut out = Vec::new();
    for m in messages.iter().filter(|m| m.kind == "webhook") {
        for a in m.body["alerts"].as_array().into_iter().flatten() {
            out.push((
                m.at_ms,
                a["rule"].as_str().unwrap_or("").to_owned(),
                a["event"].as_str().unwrap_or("").to_owned(),
                a["summary"].as_str().unwrap_or("").to_owned(),
                a["labels"].to_string(),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mrkdwn_is_escaped_and_formatted() {
        assert_eq!(
            mrkdwn("*p95* of a&b is ~slow~ `GET`"),
            "<b>p95</b> of a&amp;b is <s>slow</s> <code>GET</code>"
        );
        // `<…>` is Slack's control syntax: never raw HTML.
        assert_eq!(mrkdwn("x <script> y"), "x script y");
        assert_eq!(mrkdwn("a < b"), "a &lt; b");
        assert_eq!(
            mrkdwn("*since*\n<!date^1|2026-11-25 08:15:02 UTC>"),
            "<b>since</b><br>2026-11-25 08:15:02 UTC"
        );
        assert_eq!(
            mrkdwn("see <https://x.test/a?b=1&c=2|the view>"),
            "see <a href=\"https://x.test/a?b=1&amp;c=2\">the view</a>"
        );
        assert_eq!(mrkdwn("a * b"), "a * b");
    }

    #[test]
    fn block_kit_renders_every_block() {
        let body = serde_json::json!({
            "text": "fallback",
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": "🔥 FIRING · critical · redis-p95"}},
                {"type": "section", "text": {"type": "mrkdwn", "text": "*p95 is 180 ms*"},
                 "fields": [{"type": "mrkdwn", "text": "*service*\nboard"}]},
                {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open in Stormwatch"}, "url": "http://127.0.0.1:6100/dependencies?x=<script>"}]},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": "Stormwatch · 08:15"}]}
            ]
        });
        let html = render_message(&body, 0);
        assert!(html.contains("<h3>🔥 FIRING · critical · redis-p95</h3>"));
        assert!(html.contains("<p><b>p95 is 180 ms</b></p>"));
        assert!(html.contains("<div><b>service</b><br>board</div>"));
        assert!(html.contains("href=\"http://127.0.0.1:6100/dependencies?x=&lt;script&gt;\""));
        assert!(html.contains("class=\"msg firing\""));
        assert!(!html.contains("<script>"));
    }
}
