//! Versions of services and the changes they make: written with each batch that reports
//! them (`sw_service_versions`), read as change events — a version first seen for its
//! service after another one — for incident timelines and causes.

use deadpool_postgres::Transaction;
use serde::Serialize;
use stormwatch_model::Batch;

use crate::{Store, StoreError};

/// A version new to its service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub service: String,
    pub version: String,
    /// The version the service ran before, where known.
    pub previous: Option<String>,
    pub environment: String,
    /// Unix seconds: when the first instance was seen running it.
    pub at: f64,
    /// Instances seen running it, of the service's instances seen in the day before.
    pub instances: i64,
    pub of_instances: i64,
}

impl Change {
    /// "board 1.4.2 appeared on 3 of 4 instances (was 1.4.1)".
    pub fn words(&self) -> String {
        let was = self
            .previous
            .as_ref()
            .map(|p| format!(" (was {p})"))
            .unwrap_or_default();
        format!(
            "{} {} appeared on {} of {} instance{}{was}",
            self.service,
            self.version,
            self.instances,
            self.of_instances,
            if self.of_instances == 1 { "" } else { "s" }
        )
    }
}

/// Records the versions a batch reports: the earliest first sighting and the latest.
pub(crate) async fn store_versions(tx: &Transaction<'_>, batch: &Batch) -> Result<(), StoreError> {
    if batch.versions.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO sw_service_versions AS v
                    (service, instance, version, environment, first_seen, last_seen)
             VALUES ($1, $2, $3, $4, to_timestamp($5), to_timestamp($5))
             ON CONFLICT (service, instance, version) DO UPDATE
                SET first_seen = least(v.first_seen, excluded.first_seen),
                    last_seen = greatest(v.last_seen, excluded.last_seen),
                    environment = excluded.environment",
        )
        .await?;
    for v in &batch.versions {
        tx.execute(
            &stmt,
            &[
                &v.service,
                &v.instance,
                &v.version,
                &v.environment,
                &(v.first_seen_ns as f64 / 1e9),
            ],
        )
        .await?;
    }
    Ok(())
}

impl Store {
    /// Versions first seen for their service in `[from_s, to_s)` after another version of it,
    /// oldest first; only `services`' when given.
    pub async fn version_changes(
        &self,
        services: Option<&[String]>,
        from_s: f64,
        to_s: f64,
    ) -> Result<Vec<Change>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "WITH firsts AS (
                     SELECT service, version, min(first_seen) AS first_seen,
                            count(DISTINCT instance) AS instances, max(environment) AS environment
                       FROM sw_service_versions
                      WHERE ($3::text[] IS NULL OR service = ANY($3))
                      GROUP BY service, version)
                 SELECT f.service, f.version,
                        (SELECT p.version FROM sw_service_versions p
                          WHERE p.service = f.service AND p.version <> f.version
                            AND p.first_seen < f.first_seen
                          ORDER BY p.first_seen DESC LIMIT 1),
                        f.environment, extract(epoch FROM f.first_seen)::float8, f.instances,
                        (SELECT count(DISTINCT instance) FROM sw_service_versions a
                          WHERE a.service = f.service
                            AND a.last_seen >= f.first_seen - interval '1 day')
                   FROM firsts f
                  WHERE f.first_seen >= to_timestamp($1) AND f.first_seen < to_timestamp($2)
                    AND EXISTS (SELECT 1 FROM sw_service_versions p
                                 WHERE p.service = f.service AND p.version <> f.version
                                   AND p.first_seen < f.first_seen)
                  ORDER BY f.first_seen, f.service",
                &[&from_s, &to_s, &services],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Change {
                service: r.get(0),
                version: r.get(1),
                previous: r.get(2),
                environment: r.get(3),
                at: r.get(4),
                instances: r.get(5),
                of_instances: r.get::<_, i64>(6).max(r.get(5)),
            })
            .collect())
    }
}
