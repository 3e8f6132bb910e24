//! OTLP metrics and logs through a real agent to a recording collector: protobuf, JSON and
//! gRPC; cumulative counters shipped as increases; logs filtered to WARN+ or traced.

mod common;

use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use stormwatch_model::MetricKind;

fn metrics_request(
    service: &str,
    name: &str,
    start: u64,
    at: u64,
    v: i64,
) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", service),
                    kv("service.instance.id", "web-1"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: name.into(),
                    unit: "{request}".into(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: vec![NumberDataPoint {
                            start_time_unix_nano: start,
                            time_unix_nano: at,
                            value: Some(number_data_point::Value::AsInt(v)),
                            attributes: vec![kv("http.route", "/posts")],
                            ..Default::default()
                        }],
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn log(severity: i32, body: &str, trace: Option<[u8; 16]>) -> LogRecord {
    LogRecord {
        time_unix_nano: now_ns(),
        severity_number: severity,
        severity_text: "x".into(),
        body: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
            value: Some(
                opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(body.into()),
            ),
        }),
        trace_id: trace.map(|t| t.to_vec()).unwrap_or_default(),
        span_id: trace.map(|_| vec![9; 8]).unwrap_or_default(),
        attributes: vec![kv("code.function", "list_posts")],
        ..Default::default()
    }
}

fn logs_request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "board")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn post(url: String, ct: &str, body: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn metrics_over_http_and_grpc_ship_as_minute_points() {
    let col = FakeCollector::start().await;
    let spool = tempfile::tempdir().unwrap();
    let agent = start_agent(test_config(Some(col.url()), spool.path())).await;
    let http = agent.otlp_http.unwrap();
    // A counter that started after the agent: its first value counts whole, then increases.
    let start = now_ns();
    let t = |s: u64| start + s * 1_000_000;
    let r = post(
        format!("http://{http}/v1/metrics"),
        "application/x-protobuf",
        metrics_request("board", "http.server.requests", start, t(1), 5).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status(), 200);
    // The same series as OTLP/JSON, 64-bit integers as strings the way the spec writes them.
    let json = serde_json::json!({"resourceMetrics": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "board"}},
            {"key": "service.instance.id", "value": {"stringValue": "web-1"}}]},
        "scopeMetrics": [{"metrics": [{"name": "http.server.requests", "unit": "{request}",
            "sum": {"aggregationTemporality": 2, "isMonotonic": true, "dataPoints": [{
                "startTimeUnixNano": start.to_string(), "timeUnixNano": t(2).to_string(),
                "asInt": "12",
                "attributes": [{"key": "http.route", "value": {"stringValue": "/posts"}}]}]}}]}]}]});
    let r = post(
        format!("http://{http}/v1/metrics"),
        "application/json",
        json.to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // And over gRPC.
    let mut client = MetricsServiceClient::connect(format!("http://{}", agent.otlp_grpc.unwrap()))
        .await
        .unwrap();
    client
        .export(metrics_request(
            "board",
            "http.server.requests",
            start,
            t(3),
            20,
        ))
        .await
        .unwrap();
    eventually(10, "20 requests counted", || {
        col.metric_points().iter().map(|p| p.sum).sum::<f64>() == 20.0
    })
    .await;
    let points = col.metric_points();
    assert!(points.iter().all(|p| p.kind == MetricKind::Counter as i32
        && p.service == "board"
        && p.instance == "web-1"
        && p.attributes["http.route"] == "/posts"
        && p.minute_ns % 60_000_000_000 == 0));
    assert_eq!(points.iter().map(|p| p.count).sum::<u64>(), 3);
    assert_eq!(points.iter().max_by_key(|p| p.last_ns).unwrap().last, 20.0);

    // Unusable requests: 400 with the reason, in the request's encoding.
    let r = post(
        format!("http://{http}/v1/metrics"),
        "application/json",
        b"{\"resourceMetrics\": 7}".to_vec(),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("malformed OTLP/JSON"));
    let nameless = metrics_request("board", "", start, t(4), 1);
    let r = post(
        format!("http://{http}/v1/metrics"),
        "application/x-protobuf",
        nameless.encode_to_vec(),
    )
    .await;
    assert_eq!(r.status(), 400);
    let st = grpc_status(&r.bytes().await.unwrap());
    assert!(st.contains("the metric has no name"), "{st}");
    expect_counters(
        &agent,
        &[
            "stormwatch_agent_metric_points_received_total 4",
            "stormwatch_agent_metric_points_dropped_total 1",
        ],
    )
    .await;
    agent.shutdown(Duration::from_secs(1)).await;
}

/// The agent's `/metrics` holds each of `lines`.
async fn expect_counters(agent: &stormwatch_agent::Agent, lines: &[&str]) {
    let metrics = reqwest::get(format!("http://{}/metrics", agent.admin.unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in lines {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
}

fn grpc_status(body: &[u8]) -> String {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Status {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
    }
    Status::decode(body).map(|s| s.message).unwrap_or_default()
}

#[tokio::test]
async fn logs_at_warn_or_with_a_trace_are_shipped_the_rest_counted() {
    let col = FakeCollector::start().await;
    let spool = tempfile::tempdir().unwrap();
    let agent = start_agent(test_config(Some(col.url()), spool.path())).await;
    let http = agent.otlp_http.unwrap();
    let trace = [7u8; 16];
    let req = logs_request(vec![
        log(9, "listing posts", None), // INFO, no trace: filtered
        log(9, "cache miss for class 4", Some(trace)), // INFO in a trace: kept
        log(13, "pool nearly exhausted", None), // WARN: kept
    ]);
    let r = post(
        format!("http://{http}/v1/logs"),
        "application/x-protobuf",
        req.encode_to_vec(),
    )
    .await;
    assert_eq!(r.status(), 200);
    let mut client = LogsServiceClient::connect(format!("http://{}", agent.otlp_grpc.unwrap()))
        .await
        .unwrap();
    client
        .export(logs_request(vec![log(
            17,
            "could not connect to board-primary",
            Some(trace),
        )]))
        .await
        .unwrap();
    let json = serde_json::json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "board"}}]},
        "scopeLogs": [{"logRecords": [{"timeUnixNano": now_ns().to_string(), "severityNumber": 21,
            "severityText": "FATAL", "body": {"kvlistValue": {"values": [
                {"key": "event", "value": {"stringValue": "shutdown"}}]}},
            "traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0102030405060708"}]}]}]});
    let r = post(
        format!("http://{http}/v1/logs"),
        "application/json",
        json.to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    eventually(10, "four records", || col.log_records().len() == 4).await;
    let mut records = col.log_records();
    records.sort_by_key(|r| r.severity_number);
    let bodies: Vec<&str> = records.iter().map(|r| r.body.as_str()).collect();
    assert_eq!(
        bodies,
        [
            "cache miss for class 4",
            "pool nearly exhausted",
            "could not connect to board-primary",
            "{\"event\":\"shutdown\"}"
        ]
    );
    assert_eq!(records[0].trace_id, trace.to_vec());
    assert_eq!(records[0].span_id, vec![9; 8]);
    assert_eq!(records[0].attributes["code.function"], "list_posts");
    assert!(records[1].trace_id.is_empty());
    assert_eq!(records[3].trace_id[0], 1);
    expect_counters(
        &agent,
        &[
            "stormwatch_agent_log_records_received_total 5",
            "stormwatch_agent_log_records_filtered_total 1",
        ],
    )
    .await;
    agent.shutdown(Duration::from_secs(1)).await;
}
