//! Agent health for the dashboard: when each agent last shipped a batch, and what it dropped.

use crate::{Store, StoreError};

/// One agent as `sw_agents` remembers it (counters are the agent's own, as last reported).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentHealth {
    pub agent_id: String,
    pub instance: String,
    /// Unix milliseconds.
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub batches: i64,
    pub spans_received: i64,
    pub spans_kept: i64,
    pub spans_dropped: i64,
    pub spool_bytes: i64,
    /// Spans missing from the agent's shipped aggregates (lost with dropped batches).
    pub spans_lost: i64,
    /// Batches the collector refused for good, in the agent's dead-letter folder.
    pub dead_letter_batches: i64,
}

impl Store {
    /// Every agent that ever shipped a batch, most recently seen first.
    pub async fn agents(&self) -> Result<Vec<AgentHealth>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT agent_id, instance,
                        (extract(epoch FROM first_seen) * 1000)::int8,
                        (extract(epoch FROM last_seen) * 1000)::int8,
                        batches, spans_received, spans_kept, spans_dropped, spool_bytes,
                        spans_lost, dead_letter_batches
                   FROM sw_agents ORDER BY last_seen DESC, agent_id",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| AgentHealth {
                agent_id: r.get(0),
                instance: r.get(1),
                first_seen_ms: r.get(2),
                last_seen_ms: r.get(3),
                batches: r.get(4),
                spans_received: r.get(5),
                spans_kept: r.get(6),
                spans_dropped: r.get(7),
                spool_bytes: r.get(8),
                spans_lost: r.get(9),
                dead_letter_batches: r.get(10),
            })
            .collect())
    }
}
