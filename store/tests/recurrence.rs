//! Recurrence read from the probes and the alert history: the daily 10:00 refusal said in
//! words, from a week of samples as the agents write them.

const DAY: i64 = 20_000; // 2024-10-04, a Friday
const TEN: i64 = 10 * 3_600;

/// Probes every 5 s from 09:50 to 10:20 of `day`, failing (`class`) over `[from, to)` seconds
/// after 10:00.
async fn probes(c: &tokio_postgres::Client, db: &str, day: i64, fail: Option<(i64, i64, &str)>) {
    c.execute(
        "INSERT INTO sw_probe_samples (time, agent_id, database, engine, role, connect_us,
                                       failure, replay_paused, detail)
         SELECT to_timestamp(t), 'app-1', $1, 'postgres', 'primary',
                CASE WHEN f THEN NULL ELSE 2000 END,
                CASE WHEN f THEN $5 ELSE 'none' END, false, '{}'
           FROM generate_series($2::bigint - 600, $2::bigint + 1200, 5) AS t,
                LATERAL (SELECT t >= $2 + $3 AND t < $2 + $4 AS f) AS x",
        &[
            &db,
            &(day * 86_400 + TEN),
            &fail.map_or(0, |f| f.0),
            &fail.map_or(0, |f| f.1),
            &fail.map_or("none", |f| f.2),
        ],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn the_daily_refusal_is_said_in_words() {
    let (store, c) = stormwatch_testkit::fresh_store_and_client().await;
    // Refused 10:00–10:12 on six of seven days (one day until 10:14, one day not at all);
    // the replica never failed; another database failed once, at 03:00, a week ago.
    for (d, until) in [
        (-6, 720),
        (-5, 720),
        (-4, 840),
        (-2, 720),
        (-1, 700),
        (0, 720),
    ] {
        probes(
            &c,
            "board-primary",
            DAY + d,
            Some((0, until, "too_many_connections")),
        )
        .await;
    }
    probes(&c, "board-primary", DAY - 3, None).await;
    for d in -6..=0 {
        probes(&c, "board-replica", DAY + d, None).await;
    }
    probes(&c, "reports", DAY - 6, Some((-25_200, -25_000, "timeout"))).await;

    let at = (DAY * 86_400 + TEN + 180) as f64;
    let found = store
        .probe_recurrence(Some("board-primary"), at, Some(at))
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0].2,
        "board-primary refused connections 10:00–10:12 UTC on 6 of the last 7 days"
    );
    // The databases page asks about every database at any time of day.
    let all = store.probe_recurrence(None, at, None).await.unwrap();
    let words: Vec<&str> = all.iter().map(|(_, _, w)| w.as_str()).collect();
    assert_eq!(
        words,
        ["board-primary refused connections 10:00–10:12 UTC on 6 of the last 7 days"]
    );
    // A week later, only the last day is within the seven: not a pattern any more.
    let later = at + 6.0 * 86_400.0;
    assert!(store
        .probe_recurrence(Some("board-primary"), later, Some(later))
        .await
        .unwrap()
        .is_empty());
    // Asked about 15:00, the 10:00 refusals are another time of day.
    let afternoon = at + 5.0 * 3_600.0;
    assert!(store
        .probe_recurrence(Some("board-primary"), afternoon, Some(afternoon))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn an_alert_that_fired_at_the_same_time_before_is_recognised() {
    let (store, c) = stormwatch_testkit::fresh_store_and_client().await;
    let key = r#"{"class":"redis","peer":"cache"}"#;
    let event = |t: i64, event: &str| {
        let c = &c;
        let event = event.to_owned();
        async move {
            c.execute(
                "INSERT INTO sw_alert_events (time, rule, labels_key, labels, event, severity,
                                              summary, since)
                 VALUES (to_timestamp($1), 'dependency-latency', $2, $3::text::jsonb, $4,
                         'warning', 's', to_timestamp($1))",
                &[&(t as f64), &key, &key, &event],
            )
            .await
            .unwrap();
        }
    };
    // 09:58 → 10:03 on two earlier days, and firing now (10:00 today, not resolved yet).
    for d in [-4, -1] {
        let t = (DAY + d) * 86_400 + TEN - 120;
        event(t, "firing").await;
        event(t + 300, "resolved").await;
    }
    let now = DAY * 86_400 + TEN;
    event(now, "firing").await;
    let r = store
        .alert_recurrence("dependency-latency", key, now as f64 + 30.0)
        .await
        .unwrap()
        .expect("recurs");
    assert_eq!(r.when(), "09:58–10:03 UTC on 3 of the last 7 days");
    // Another alert, or the same one at another hour, has no history.
    assert!(store
        .alert_recurrence("dependency-latency", "{}", now as f64)
        .await
        .unwrap()
        .is_none());
}
