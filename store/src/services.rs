//! The services seen in a time window, from the aggregates.

use serde::Serialize;

use crate::{Store, StoreError};

/// One service's totals over a window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServiceSummary {
    pub service: String,
    pub count: u64,
    pub errors: u64,
}

impl Store {
    /// Services with spans between `from_s` and `to_s` (seconds since the Unix epoch).
    pub async fn services(
        &self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<ServiceSummary>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT service, sum(count)::int8, sum(errors)::int8 FROM sw_aggregates
                  WHERE minute >= to_timestamp($1) AND minute < to_timestamp($2)
                  GROUP BY service ORDER BY service",
                &[&(from_s as f64), &(to_s as f64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ServiceSummary {
                service: r.get(0),
                count: r.get::<_, i64>(1) as u64,
                errors: r.get::<_, i64>(2) as u64,
            })
            .collect())
    }
}
