//! The incidents pages and the overview's open incidents, over incidents written the way the
//! collector's alert leader writes them.

mod common;

use axum::http::StatusCode;
use common::*;
use stormwatch_store::incidents::{IncidentAlert, IncidentChange};
use stormwatch_store::signals::Labels;

fn member(rule: &str, labels: &[(&str, &str)], started: f64) -> IncidentAlert {
    let labels: Labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    IncidentAlert {
        rule: rule.into(),
        labels_key: stormwatch_store::alerts::labels_key(&labels),
        labels,
        severity: "critical".into(),
        summary: format!("{rule} <fired>"),
        started,
        joined: started,
        resolved: None,
    }
}

#[tokio::test]
async fn incidents_list_detail_and_overview() {
    let store = empty_store().await;
    let now_s = stormwatch_store::now_ns() as f64 / 1e9;
    let term = store
        .take_leadership("pages-test", std::time::Duration::from_secs(60), true)
        .await
        .unwrap()
        .unwrap();
    let line =
        "Redis cache p95 948 ms, ×600 its usual, explains 91 % of the added latency of GET /items";
    let cause = serde_json::json!([{
        "rank": 1, "kind": "dependency", "subject": "Redis cache", "line": line, "score": 1.91,
        "evidence": [
            {"name": "p95 during the incident", "value": 948.0, "unit": "ms"},
            {"name": "share of the added latency", "value": 91.2, "unit": "%"}
        ]
    }]);
    let ids = store
        .apply_incident_changes(
            &term,
            &[
                IncidentChange::Open {
                    opened: now_s - 120.0,
                    title: "dependency-latency <fired> (+1 more alert)".into(),
                    cause_text: line.into(),
                    cause,
                    recurrence: vec![
                        "dependency-latency for redis · cache fired 10:00–10:05 UTC on 3 of the last 7 days".into(),
                    ],
                    alerts: vec![
                        member(
                            "dependency-latency",
                            &[("class", "redis"), ("peer", "cache (redis, 10.0.0.3:6379)")],
                            now_s - 120.0,
                        ),
                        member(
                            "http-5xx-rate",
                            &[("service", "shop"), ("operation", "GET /items")],
                            now_s - 90.0,
                        ),
                    ],
                },
                IncidentChange::Open {
                    opened: now_s - 3000.0,
                    title: "agent-silent".into(),
                    cause_text: String::new(),
                    cause: serde_json::json!([]),
                    recurrence: vec![],
                    alerts: vec![member("agent-silent", &[("agent", "a-1")], now_s - 3000.0)],
                },
            ],
            now_s,
        )
        .await
        .unwrap();
    store
        .apply_incident_changes(
            &term,
            &[IncidentChange::Resolve {
                incident: ids[1],
                at: now_s - 2900.0,
            }],
            now_s,
        )
        .await
        .unwrap();
    let app = stormwatch_web::router(store);

    let (status, page) = get(&app, "/incidents?range=24h").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let open_at = page
        .find(&format!("href=\"/incidents/{}?", ids[0]))
        .unwrap();
    let resolved_at = page
        .find(&format!("href=\"/incidents/{}?", ids[1]))
        .unwrap();
    assert!(open_at < resolved_at, "open incidents first");
    assert!(page.contains("×600 its usual, explains 91 %"), "{page}");
    assert!(page.contains("&#60;fired&#62;"), "escaped title");
    assert!(page.contains(">Incidents</a>"), "in the nav");

    let (status, page) = get(&app, &format!("/incidents/{}", ids[0])).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("id=\"causes\"") && page.contains(line),
        "{page}"
    );
    assert!(
        page.contains(
            "<th scope=\"row\">p95 during the incident</th><td class=\"num\">948 ms</td>"
        ),
        "{page}"
    );
    assert!(page.contains("91.2 %"), "{page}");
    // The timeline: one bar per alert with its summary as the hover title.
    let timeline = page
        .split("id=\"timeline\">")
        .nth(1)
        .and_then(|t| t.split("</svg>").next())
        .expect("a timeline");
    assert!(timeline.contains("class=\"chart timeline\""), "{timeline}");
    assert_eq!(timeline.matches("class=\"bar\"").count(), 2, "{timeline}");
    assert!(
        timeline.contains("<title>http-5xx-rate: http-5xx-rate &lt;fired&gt; (from "),
        "{timeline}"
    );
    assert!(
        page.contains("<h2>Seen before</h2>")
            && page.contains("fired 10:00–10:05 UTC on 3 of the last 7 days"),
        "{page}"
    );
    assert!(page.contains("<td>http-5xx-rate</td>") && page.contains("operation=GET /items"));

    let (status, page) = get(&app, "/?range=1h").await;
    assert_eq!(status, StatusCode::OK);
    let lead = page
        .find("id=\"open-incidents\"")
        .expect("overview leads with open incidents");
    assert!(lead < page.find("<h2>Agents</h2>").unwrap());
    assert!(
        page.contains(&format!("probable cause: <strong>{line}</strong>")),
        "{page}"
    );
    assert!(
        !page.contains("agent-silent"),
        "resolved incidents are not on the overview"
    );

    let (status, _) = get(&app, "/incidents/nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = get(&app, "/incidents/999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
