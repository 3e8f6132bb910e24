//! The service map over a window: services (their requests), the peers they call (databases,
//! Redis, HTTP callees, brokers) with each peer's latency, and the calls between them. Read
//! from the rollups (services, peers) and one grouped sum over the aggregates (who calls
//! whom, without histograms), so a day's map costs no more than the overview.

use crate::dependencies::PeerSummary;
use crate::overview::ServiceOverview;
use crate::{Store, StoreError};

/// Calls from a service to a peer over the window.
#[derive(Debug, Clone, PartialEq)]
pub struct MapEdge {
    pub service: String,
    pub class: String,
    pub peer: String,
    pub calls: u64,
    pub errors: u64,
}

/// Everything the map draws.
#[derive(Debug, Clone)]
pub struct ServiceMap {
    pub services: Vec<ServiceOverview>,
    /// Every peer called in the window, with its latency over all callers.
    pub peers: Vec<PeerSummary>,
    pub edges: Vec<MapEdge>,
}

impl Store {
    /// The map of `[from_s, to_s)`.
    pub async fn service_map(&self, from_s: i64, to_s: i64) -> Result<ServiceMap, StoreError> {
        let from = from_s.div_euclid(60) * 60;
        let edges = async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT service, class, peer, sum(count)::int8, sum(errors)::int8
                       FROM sw_aggregates
                      WHERE minute >= to_timestamp($1) AND minute < to_timestamp($2)
                        AND class IN ('db', 'redis', 'http_client', 'messaging') AND peer <> ''
                      GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
                )
                .await?;
            let rows = client
                .query(&stmt, &[&(from as f64), &(to_s as f64)])
                .await?;
            Ok::<_, StoreError>(
                rows.iter()
                    .map(|r| MapEdge {
                        service: r.get(0),
                        class: r.get(1),
                        peer: r.get(2),
                        calls: r.get::<_, i64>(3).max(0) as u64,
                        errors: r.get::<_, i64>(4).max(0) as u64,
                    })
                    .collect::<Vec<_>>(),
            )
        };
        let (services, peers, edges) = tokio::try_join!(
            self.service_overview(from, to_s, (to_s - from).max(60)),
            self.peer_summaries(from, to_s),
            edges
        )?;
        Ok(ServiceMap {
            services,
            peers,
            edges,
        })
    }
}
