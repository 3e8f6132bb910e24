//! An incident's alerts on earlier days, in words: a database's failed probes at about the
//! same time of day ("shop-primary refused connections 10:00–10:12 UTC on 6 of the last 7
//! days"), and for any other alert, whether it fired at about the same minute before.

use stormwatch_store::alerts::labels_key;
use stormwatch_store::{Store, StoreError};

use super::cause::AlertFacts;
use crate::alerts::config::RuleKind;

/// One sentence per alert that recurred, in the order of the alerts, without repeats.
pub async fn recurrence(store: &Store, facts: &[AlertFacts]) -> Result<Vec<String>, StoreError> {
    let mut out: Vec<String> = Vec::new();
    for f in facts {
        let database = f.labels.get("database").filter(|d| !d.is_empty());
        let words = match (f.kind, database) {
            (Some(RuleKind::DbConnect), Some(db)) => store
                .probe_recurrence(Some(db), f.started, Some(f.started))
                .await?
                .into_iter()
                .next()
                .map(|(_, _, words)| words),
            _ => store
                .alert_recurrence(&f.rule, &labels_key(&f.labels), f.started)
                .await?
                .map(|r| {
                    let on: Vec<&str> = f
                        .labels
                        .values()
                        .map(String::as_str)
                        .filter(|v| !v.is_empty())
                        .collect();
                    if on.is_empty() {
                        format!("{} fired {}", f.rule, r.when())
                    } else {
                        format!("{} for {} fired {}", f.rule, on.join(" · "), r.when())
                    }
                }),
        };
        if let Some(w) = words.filter(|w| !out.contains(w)) {
            out.push(w);
        }
    }
    Ok(out)
}
