//! What every outgoing alert message shares: Slack's escaping, UTC timestamps, and how long
//! one send may take.

use std::time::Duration;

/// Timeout of one HTTP request to Slack or a webhook.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// `ts` (Unix seconds) as RFC 3339 UTC.
pub fn utc(ts: f64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ts as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ts:.0}"))
}

/// Escapes `&`, `<` and `>` as Slack requires of text it parses (mrkdwn and the `text`
/// fallback): labels come from spans, so a peer named `<!channel>` or
/// `<https://evil.example|click>` would otherwise page a whole channel or show a disguised link.
pub fn slack_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}
