//! Ingest over real HTTP into a real PostgreSQL: round trips, exactly-once, auth, bad input.

mod common;

use common::{gzip, start, start_fresh, zstd, TOKEN};
use reqwest::StatusCode;
use serde_json::Value;
use stormwatch_collector::ingest::IngestResponse;
use stormwatch_collector::Config;
use stormwatch_model::{Batch, Encoding, Span};
use stormwatch_testkit::sample;

const NS: i64 = 1_000_000_000;

fn now() -> i64 {
    stormwatch_store::now_ns()
}

async fn post(
    url: &str,
    body: Vec<u8>,
    content_type: &str,
    encoding: Option<&str>,
    token: Option<&str>,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("request")
}

async fn send(
    c: &common::Running,
    batch: &Batch,
    encoding: Encoding,
    compression: Option<&str>,
) -> reqwest::Response {
    let raw = batch.encode(encoding);
    let body = match compression {
        Some("gzip") => gzip(&raw),
        Some("zstd") => zstd(&raw),
        _ => raw,
    };
    post(
        &c.endpoint("/api/v1/ingest"),
        body,
        encoding.content_type(),
        compression,
        Some(TOKEN),
    )
    .await
}

async fn error_of(resp: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(resp.status(), status);
    resp.json().await.expect("a JSON error body")
}

async fn stored_spans(c: &common::Running) -> Vec<Span> {
    let v: Value = reqwest::get(c.endpoint(&format!(
        "/api/v1/spans?from=0&to={}&limit=10000",
        now() / 1_000_000 + 86_400_000
    )))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    serde_json::from_value(v["spans"].clone()).unwrap()
}

#[tokio::test]
async fn round_trip_in_every_encoding() {
    let (c, _) = start_fresh().await;
    let t = now();
    let cases = [
        (Encoding::Json, None),
        (Encoding::Json, Some("gzip")),
        (Encoding::Protobuf, None),
        (Encoding::Protobuf, Some("zstd")),
        (Encoding::Protobuf, Some("gzip")),
        (Encoding::Json, Some("zstd")),
    ];
    let mut sent = Vec::new();
    for (i, (enc, comp)) in cases.iter().enumerate() {
        let batch = sample::batch("agent-rt", i as u64 + 1, 40, t);
        let resp = send(&c, &batch, *enc, *comp).await;
        assert_eq!(resp.status(), StatusCode::OK, "{enc:?} {comp:?}");
        let body: IngestResponse = resp.json().await.unwrap();
        assert_eq!(
            (body.status.as_str(), body.spans, body.samples),
            ("stored", 40, 1),
            "{enc:?} {comp:?}"
        );
        sent.extend(batch.spans);
    }
    let mut stored = stored_spans(&c).await;
    let key = |s: &Span| (s.start_ns, s.span_id.clone(), s.trace_id.clone());
    stored.sort_by_key(key);
    sent.sort_by_key(key);
    assert_eq!(stored, sent);

    // A whole trace by id.
    let id = stormwatch_model::hexid::encode(&sent[0].trace_id);
    let trace: Value = reqwest::get(c.endpoint(&format!("/api/v1/traces/{id}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(trace["spans"].as_array().unwrap().len(), 4);
    let missing = reqwest::get(c.endpoint("/api/v1/traces/0123456789abcdef0123456789abcdef"))
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let bad = reqwest::get(c.endpoint("/api/v1/traces/xyz"))
        .await
        .unwrap();
    assert_eq!(
        error_of(bad, StatusCode::BAD_REQUEST).await["field"],
        "trace_id"
    );

    // Aggregates: every span counted; services list.
    let from = (t / NS - 3_600) * 1000;
    let agg: Value = reqwest::get(c.endpoint(&format!(
        "/api/v1/aggregates?service=board&from={from}&step=1h"
    )))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let total: u64 = agg["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 240);
    let services: Value = reqwest::get(c.endpoint("/api/v1/services"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(services["services"][0]["service"], "board");
    assert_eq!(services["services"][0]["count"], 240);

    // Read-API input errors name the parameter.
    let r = reqwest::get(c.endpoint("/api/v1/aggregates?class=mongo"))
        .await
        .unwrap();
    assert_eq!(error_of(r, StatusCode::BAD_REQUEST).await["field"], "class");
    let r = reqwest::get(c.endpoint("/api/v1/spans?from=tomorrow"))
        .await
        .unwrap();
    assert_eq!(error_of(r, StatusCode::BAD_REQUEST).await["field"], "from");
    c.stop().await;
}

#[tokio::test]
async fn a_retried_batch_is_stored_once() {
    let (c, _) = start_fresh().await;
    let batch = sample::batch("agent-retry", 7, 100, now());
    let first: IngestResponse = send(&c, &batch, Encoding::Protobuf, Some("zstd"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first.status, "stored");
    // Same batch, other encoding: still the same (agent, instance, sequence).
    let again: IngestResponse = send(&c, &batch, Encoding::Json, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again.status, "duplicate");
    assert_eq!(stored_spans(&c).await.len(), 100);
    // Concurrent retries of a new batch: exactly one is stored.
    let next = sample::batch("agent-retry", 8, 50, now());
    let (a, b) = tokio::join!(
        send(&c, &next, Encoding::Protobuf, None),
        send(&c, &next, Encoding::Protobuf, None)
    );
    let (a, b): (IngestResponse, IngestResponse) =
        (a.json().await.unwrap(), b.json().await.unwrap());
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, ["duplicate".to_owned(), "stored".to_owned()]);
    assert_eq!(stored_spans(&c).await.len(), 150);
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("stormwatch_collector_batches_total{result=\"duplicate\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("stormwatch_collector_spans_ingested_total 150"),
        "{metrics}"
    );
    c.stop().await;
}

#[tokio::test]
async fn authentication() {
    let (c, _) = start_fresh().await;
    let body = sample::batch("a", 1, 1, now()).encode(Encoding::Json);
    let url = c.endpoint("/api/v1/ingest");
    let none = post(&url, body.clone(), "application/json", None, None).await;
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        error_of(none, StatusCode::UNAUTHORIZED).await["reason"],
        "unauthorized"
    );
    let wrong = post(
        &url,
        body.clone(),
        "application/json",
        None,
        Some("not-a-known-token-xxxx"),
    )
    .await;
    assert_eq!(
        error_of(wrong, StatusCode::FORBIDDEN).await["reason"],
        "forbidden"
    );
    let basic = reqwest::Client::new()
        .post(&url)
        .header("authorization", "Basic dXNlcjpwYXNz")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    assert!(stored_spans(&c).await.is_empty());
    c.stop().await;
}

/// Sends `batch` as JSON and expects a 400 naming `field`.
async fn expect_field_error(c: &common::Running, batch: &Batch, field: &str) -> String {
    let resp = send(c, batch, Encoding::Json, None).await;
    let err = error_of(resp, StatusCode::BAD_REQUEST).await;
    assert_eq!(err["field"], field, "{err}");
    err["error"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn bad_input_is_rejected_whole_with_a_reason() {
    let (c, _) = start_fresh().await;
    let url = c.endpoint("/api/v1/ingest");
    let t = now();
    let base = || sample::batch("agent-bad", 1, 20, t);

    // Malformed bodies.
    let r = post(
        &url,
        b"{\"version\": 1,".to_vec(),
        "application/json",
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(
        error_of(r, StatusCode::BAD_REQUEST).await["reason"],
        "malformed"
    );
    let r = post(
        &url,
        vec![0xff, 0xff, 0xff, 0x0f],
        "application/x-protobuf",
        None,
        Some(TOKEN),
    )
    .await;
    assert!(error_of(r, StatusCode::BAD_REQUEST).await["error"]
        .as_str()
        .unwrap()
        .contains("protobuf"));
    // Wrong type: the JSON path of the field is named.
    let mut v: Value = serde_json::from_slice(&base().encode(Encoding::Json)).unwrap();
    v["spans"][2]["duration_ns"] = Value::String("slow".into());
    let r = post(
        &url,
        serde_json::to_vec(&v).unwrap(),
        "application/json",
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(
        error_of(r, StatusCode::BAD_REQUEST).await["field"],
        "spans[2].duration_ns"
    );
    // Invalid UTF-8, in JSON and in protobuf strings.
    let mut json = base().encode(Encoding::Json);
    let at = json.windows(5).position(|w| w == b"board").unwrap();
    json[at] = 0xff;
    let r = post(&url, json, "application/json", None, Some(TOKEN)).await;
    assert_eq!(
        error_of(r, StatusCode::BAD_REQUEST).await["reason"],
        "malformed"
    );
    let mut pb = base().encode(Encoding::Protobuf);
    let at = pb.windows(5).position(|w| w == b"board").unwrap();
    pb[at] = 0xff;
    let r = post(&url, pb, "application/x-protobuf", None, Some(TOKEN)).await;
    assert_eq!(
        error_of(r, StatusCode::BAD_REQUEST).await["reason"],
        "malformed"
    );
    // Unsupported media type and encoding; corrupt compression.
    let r = post(
        &url,
        base().encode(Encoding::Json),
        "text/plain",
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = post(
        &url,
        base().encode(Encoding::Json),
        "application/json",
        Some("br"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = post(
        &url,
        b"definitely not zstd".to_vec(),
        "application/json",
        Some("zstd"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(
        error_of(r, StatusCode::BAD_REQUEST).await["reason"],
        "bad_compression"
    );

    // Semantic errors name the field; an error in span 10 of 20 stores nothing at all.
    let mut b = base();
    b.spans[10].start_ns = 900_000_000 * NS; // 1998
    assert!(expect_field_error(&c, &b, "spans[10].start_ns")
        .await
        .contains("2000"));
    let mut b = base();
    b.spans[3].start_ns = t + 2 * 86_400 * NS;
    assert!(expect_field_error(&c, &b, "spans[3].start_ns")
        .await
        .contains("ahead"));
    let mut b = base();
    b.spans[4].duration_ns = -5;
    assert!(expect_field_error(&c, &b, "spans[4].duration_ns")
        .await
        .contains("negative"));
    let mut b = base();
    b.spans[0].trace_id = vec![0; 16];
    expect_field_error(&c, &b, "spans[0].trace_id").await;
    let mut b = base();
    b.spans[1].span_id = vec![1, 2, 3];
    expect_field_error(&c, &b, "spans[1].span_id").await;
    let mut b = base();
    b.version = 9;
    expect_field_error(&c, &b, "version").await;
    let mut b = base();
    b.aggregates[0].count += 1;
    expect_field_error(&c, &b, "aggregates[0].histogram").await;
    assert!(
        stored_spans(&c).await.is_empty(),
        "no rejected batch may leave spans behind"
    );

    // Over-long values and too many attributes: truncated with a marker, counted, stored.
    let mut b = base();
    b.spans[0].statement = "SELECT ".to_owned() + &"x, ".repeat(5_000);
    for i in 0..100 {
        b.spans[1]
            .attributes
            .insert(format!("k{i:03}"), "v".repeat(2_000));
    }
    let resp = send(&c, &b, Encoding::Protobuf, None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let out: IngestResponse = resp.json().await.unwrap();
    // Span 1 had one short attribute (http.route) besides the 100 long ones: 101 in all; 63
    // are kept (the 64th slot holds the dropped count), 62 of them long and cut.
    assert_eq!(out.dropped_attributes, 101 - 63);
    assert_eq!(out.truncated_values, 1 + 62);
    let stored = stored_spans(&c).await;
    let stmt = stored
        .iter()
        .find(|s| s.statement.starts_with("SELECT x"))
        .unwrap();
    assert!(stmt.statement.len() <= stormwatch_model::limits::MAX_STATEMENT_BYTES);
    assert!(stmt
        .statement
        .ends_with(stormwatch_model::limits::TRUNCATION_MARKER));
    let attrs = &stored
        .iter()
        .find(|s| s.attributes.len() > 2)
        .unwrap()
        .attributes;
    assert_eq!(attrs.len(), 64);
    assert_eq!(
        attrs[stormwatch_model::limits::DROPPED_ATTRIBUTES_KEY],
        "38"
    );
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("stormwatch_collector_rejected_total{reason=\"invalid\"} 7"),
        "{metrics}"
    );
    assert!(
        metrics.contains("stormwatch_collector_truncated_total{kind=\"attributes\"} 38"),
        "{metrics}"
    );
    c.stop().await;
}

/// A NUL character cannot be stored by PostgreSQL. It used to reach COPY and fail the whole
/// batch with a 503, which agents retry forever; now it is a 400 naming the field, in every
/// encoding, and filters holding `%00` are 400 too.
#[tokio::test]
async fn a_nul_character_is_a_400_naming_its_field_never_a_503() {
    let (c, _) = start_fresh().await;
    let t = now();
    let base = || sample::batch("agent-nul", 1, 20, t);
    let mut b = base();
    b.spans[5].service = "bo\0ard".into();
    for enc in [Encoding::Json, Encoding::Protobuf] {
        let err = error_of(send(&c, &b, enc, None).await, StatusCode::BAD_REQUEST).await;
        assert_eq!(err["field"], "spans[5].service", "{err}");
        assert!(err["error"].as_str().unwrap().contains("NUL"), "{err}");
    }
    let mut b = base();
    b.spans[2].attributes.insert("user".into(), "x\0".into());
    expect_field_error(&c, &b, "spans[2].attributes[\"user\"]").await;
    let mut b = base();
    b.spans[2].attributes.insert("us\0er".into(), "x".into());
    expect_field_error(&c, &b, "spans[2].attributes").await;
    // An unsampled span's NUL travels only in the per-minute aggregate.
    let mut b = base();
    b.aggregates[0].operation = "GET /\0".into();
    expect_field_error(&c, &b, "aggregates[0].operation").await;
    let mut b = base();
    b.probes.push(stormwatch_model::ProbeSample {
        database: "db-1".into(),
        time_ns: t,
        failure_message: "server said \0".into(),
        ..Default::default()
    });
    expect_field_error(&c, &b, "probes[0].failure_message").await;
    let mut b = base();
    b.agent_id = "agent\0".into();
    expect_field_error(&c, &b, "agent_id").await;
    assert!(stored_spans(&c).await.is_empty());
    // The same batch without the NUL is stored: nothing about the agent is poisoned.
    let ok = send(&c, &base(), Encoding::Protobuf, None).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(stored_spans(&c).await.len(), 20);

    // Read API filters and path parameters.
    for (path, field) in [
        ("/api/v1/spans?service=bo%00ard", "service"),
        ("/api/v1/spans?peer=%00", "peer"),
        (
            "/api/v1/aggregates?service=board&operation=GET%20%2F%00",
            "operation",
        ),
        ("/api/v1/services?from=0%00", "from"),
        ("/api/v1/databases/db%001/samples", "path"),
    ] {
        let err = error_of(
            reqwest::get(c.endpoint(path)).await.unwrap(),
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(err["field"], field, "{path}: {err}");
    }
    // Dashboard pages: the error page, 400.
    for path in [
        "/spans?service=bo%00ard",
        "/scatter?peer=%00",
        "/dependencies?service=%00",
        "/traces/0123456789abcdef0123456789abcdef?service=%00",
    ] {
        let r = reqwest::get(c.endpoint(path)).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        assert!(r.text().await.unwrap().contains("NUL"), "{path}");
    }
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("stormwatch_collector_db_errors_total 0"),
        "no NUL may reach the database: {metrics}"
    );
    c.stop().await;
}

#[tokio::test]
async fn body_limits() {
    let db = stormwatch_testkit::fresh_database().await;
    let mut config = Config::for_tests(&db, TOKEN);
    config.max_body_bytes = 64 * 1024;
    config.max_decompressed_bytes = 256 * 1024;
    let c = start(config).await;
    let big = sample::batch("agent-big", 1, 2_000, now());
    // Too large as sent.
    let r = send(&c, &big, Encoding::Json, None).await;
    let err = error_of(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(err["error"].as_str().unwrap().contains("65536"), "{err}");
    // Small when compressed, too large once inflated (a zip bomb is refused, not inflated),
    // whether its frame says how large it is (as the agent's do) or not (streamed).
    let spaces = vec![b' '; 10 << 20];
    for bomb in [zstd(&spaces), zstd::encode_all(&spaces[..], 1).unwrap()] {
        assert!(bomb.len() < 64 * 1024);
        let r = post(
            &c.endpoint("/api/v1/ingest"),
            bomb,
            "application/json",
            Some("zstd"),
            Some(TOKEN),
        )
        .await;
        assert!(error_of(r, StatusCode::PAYLOAD_TOO_LARGE).await["error"]
            .as_str()
            .unwrap()
            .contains("decompressed"));
    }
    // A declared length over the limit is answered before the body is sent: the client is
    // not kept uploading 100 MB to be told no (it used to wait for the whole body).
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(c.addr).await.unwrap();
        let head = format!(
            "POST /api/v1/ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 100000000\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }
    // Within both limits, with its size in the frame and streamed.
    let ok = sample::batch("agent-big", 2, 200, now());
    assert_eq!(
        send(&c, &ok, Encoding::Protobuf, Some("zstd"))
            .await
            .status(),
        StatusCode::OK
    );
    let streamed = sample::batch("agent-big", 3, 200, now());
    let r = post(
        &c.endpoint("/api/v1/ingest"),
        zstd::encode_all(&streamed.encode(Encoding::Protobuf)[..], 1).unwrap(),
        "application/x-protobuf",
        Some("zstd"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    c.stop().await;
}

#[tokio::test]
async fn health_and_a_restart_keeping_the_data() {
    let (c, db) = start_fresh().await;
    assert_eq!(
        reqwest::get(c.endpoint("/healthz")).await.unwrap().status(),
        StatusCode::OK
    );
    let batch = sample::batch("agent-restart", 1, 30, now());
    assert_eq!(
        send(&c, &batch, Encoding::Protobuf, None).await.status(),
        StatusCode::OK
    );
    c.stop().await;

    let c = start(Config::for_tests(&db, TOKEN)).await;
    assert_eq!(stored_spans(&c).await.len(), 30);
    // The restarted collector still knows the batch: a resend is a duplicate.
    let again: IngestResponse = send(&c, &batch, Encoding::Protobuf, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again.status, "duplicate");
    let page = reqwest::get(c.endpoint("/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(">board</a></td>"), "{page}");
    c.stop().await;
}

#[tokio::test]
async fn database_probe_samples_are_served() {
    let (c, _) = start_fresh().await;
    let t = now();
    let mut b = sample::batch("agent-db", 1, 4, t);
    let probe = |db: &str, at: i64, lag: f64, failure: i32| stormwatch_model::ProbeSample {
        time_ns: at,
        database: db.into(),
        engine: "postgres".into(),
        role: if db == "primary" {
            stormwatch_model::DbRole::Primary
        } else {
            stormwatch_model::DbRole::Replica
        } as i32,
        connect_us: (failure == 0).then_some(1_500),
        failure,
        failure_message: if failure == 0 {
            String::new()
        } else {
            "connection refused".into()
        },
        lag_seconds: (db != "primary").then_some(lag),
        ..Default::default()
    };
    b.probes = vec![
        probe("primary", t - 3 * NS, 0.0, 0),
        probe(
            "primary",
            t - 2 * NS,
            0.0,
            stormwatch_model::FailureClass::Refused as i32,
        ),
        probe("replica-1", t - 3 * NS, 0.5, 0),
        probe("replica-1", t - 2 * NS, 7.5, 0),
    ];
    assert_eq!(
        send(&c, &b, Encoding::Protobuf, None).await.status(),
        StatusCode::OK
    );
    let v: Value = reqwest::get(c.endpoint("/api/v1/databases"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dbs = v["databases"].as_array().unwrap();
    assert_eq!(dbs.len(), 2);
    assert_eq!(dbs[0]["database"], "primary");
    assert_eq!(dbs[0]["failure"], "refused");
    assert_eq!(dbs[0]["failure_message"], "connection refused");
    assert_eq!(dbs[1]["database"], "replica-1");
    assert_eq!(dbs[1]["lag_seconds"], 7.5);
    assert_eq!(dbs[1]["agent_id"], "agent-db");
    let v: Value = reqwest::get(c.endpoint("/api/v1/databases/replica-1/samples"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lags: Vec<f64> = v["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["lag_seconds"].as_f64().unwrap())
        .collect();
    assert_eq!(lags, [0.5, 7.5]);
    assert_eq!(v["samples"][0]["connect_ms"], 1.5);
    c.stop().await;
}
