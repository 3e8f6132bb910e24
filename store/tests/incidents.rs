//! `sw_incidents` and `sw_incident_alerts`: fenced writes, one open incident per alert, the
//! reads of the dashboard and API, and the traffic causes are worked out from.

use std::time::Duration;

use stormwatch_store::incidents::{IncidentAlert, IncidentChange};
use stormwatch_store::signals::Labels;
use stormwatch_store::{Store, StoreError};
use stormwatch_testkit::sample;

async fn store() -> Store {
    stormwatch_testkit::fresh_store().await
}

fn alert(rule: &str, service: &str, started: f64) -> IncidentAlert {
    let labels = Labels::from([("service".to_owned(), service.to_owned())]);
    IncidentAlert {
        rule: rule.into(),
        labels_key: stormwatch_store::alerts::labels_key(&labels),
        labels,
        severity: "critical".into(),
        summary: format!("{rule} on {service}"),
        started,
        joined: started,
        resolved: None,
    }
}

fn open(at: f64, alerts: Vec<IncidentAlert>) -> IncidentChange {
    IncidentChange::Open {
        opened: at,
        title: alerts[0].summary.clone(),
        cause_text: "Redis cache p95 900 ms".into(),
        cause: serde_json::json!([{"line": "Redis cache p95 900 ms"}]),
        recurrence: vec![],
        alerts,
    }
}

#[tokio::test]
async fn incidents_are_written_under_the_leaders_epoch_only() {
    let store = store().await;
    let lease = Duration::from_secs(15);
    let old = store
        .take_leadership("a", Duration::ZERO, false)
        .await
        .unwrap()
        .unwrap();
    // The lease of `a` has passed at once: `b` takes over.
    let new = store
        .take_leadership("b", lease, false)
        .await
        .unwrap()
        .unwrap();
    let t = 1_790_000_000.0;
    let err = store
        .apply_incident_changes(&old, &[open(t, vec![alert("r", "board", t)])], t)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    assert!(store.open_incidents().await.unwrap().is_empty());

    let ids = store
        .apply_incident_changes(&new, &[open(t, vec![alert("r", "board", t)])], t)
        .await
        .unwrap();
    assert_eq!(ids.len(), 1);
    // The same alert cannot be in a second open incident, whoever writes.
    let twice = store
        .apply_incident_changes(&new, &[open(t, vec![alert("r", "board", t)])], t)
        .await;
    assert!(twice.is_err(), "an alert in two open incidents");

    // Another alert joins, one resolves, then the incident resolves.
    let id = ids[0];
    store
        .apply_incident_changes(
            &new,
            &[
                IncidentChange::Join {
                    incident: id,
                    alert: alert("s", "board", t + 30.0),
                },
                IncidentChange::AlertResolved {
                    incident: id,
                    rule: "r".into(),
                    labels_key: "service=board".into(),
                    at: Some(t + 60.0),
                },
            ],
            t + 60.0,
        )
        .await
        .unwrap();
    let i = store.incident(id).await.unwrap().unwrap();
    assert_eq!(i.alerts.len(), 2);
    assert_eq!(i.alerts[0].resolved, Some(t + 60.0));
    assert_eq!(i.alerts[1].resolved, None);
    assert_eq!(i.cause_text, "Redis cache p95 900 ms");
    let refs = store
        .incidents_of_alerts(&[("s".into(), "service=board".into(), t + 31.0)])
        .await
        .unwrap();
    assert_eq!(refs.values().next().unwrap().id, id);

    store
        .apply_incident_changes(
            &new,
            &[IncidentChange::Resolve {
                incident: id,
                at: t + 90.0,
            }],
            t + 90.0,
        )
        .await
        .unwrap();
    assert!(store.open_incidents().await.unwrap().is_empty());
    let listed = store.incidents(t - 10.0, t + 100.0).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].resolved, Some(t + 90.0));
    assert!(listed[0].alerts.iter().all(|a| a.resolved.is_some()));
    assert!(store
        .incidents(t + 100.0, t + 200.0)
        .await
        .unwrap()
        .is_empty());
    // Resolved, the alert may open a new incident.
    store
        .apply_incident_changes(
            &new,
            &[open(t + 300.0, vec![alert("r", "board", t + 300.0)])],
            t + 300.0,
        )
        .await
        .unwrap();
    assert_eq!(store.open_incidents().await.unwrap().len(), 1);
}

#[tokio::test]
async fn service_traffic_splits_operations_and_dependencies() {
    let store = store().await;
    let now = stormwatch_store::now_ns();
    let batch = sample::batch("a", 1, 200, now);
    store.store_batch(&batch, now).await.unwrap();
    let now_s = now / 1_000_000_000;
    let services: Vec<String> = batch
        .aggregates
        .iter()
        .map(|a| a.service.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let traffic = store
        .service_traffic(&services, now_s - 600, now_s + 60)
        .await
        .unwrap();
    let total: u64 = traffic
        .values()
        .flat_map(|t| t.operations.values().chain(t.dependencies.values()))
        .map(|s| s.count)
        .sum();
    let expected: u64 = batch
        .aggregates
        .iter()
        .filter(|a| a.class != stormwatch_model::DependencyClass::Internal as i32)
        .map(|a| a.count)
        .sum();
    assert_eq!(total, expected);
    let edges = store
        .dependency_edges(now_s - 600, now_s + 60)
        .await
        .unwrap();
    assert!(
        edges
            .iter()
            .any(|(_, c, p)| c == "redis" && p == "redis:6379"),
        "{edges:?}"
    );
}
