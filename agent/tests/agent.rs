//! The agent end to end over real sockets: receivers → pipeline → spool → a fake collector.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use stormwatch_agent::metrics::DropReason;
use stormwatch_agent::receivers::rpc;
use stormwatch_model::{DependencyClass, KeepReason, SpanFlag};

const SERVER: i32 = 2;
const CLIENT: i32 = 3;

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post_proto(agent: &stormwatch_agent::Agent, body: Vec<u8>) -> reqwest::Response {
    http()
        .post(format!("http://{}/v1/traces", agent.otlp_http.unwrap()))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn otlp_http_protobuf_spans_are_aggregated_sampled_and_shipped() {
    let spool = tempfile::tempdir().unwrap();
    let col = FakeCollector::start().await;
    let agent = start_agent(test_config(Some(col.url()), spool.path())).await;

    let mut spans = Vec::new();
    // 200 fast db spans in 200 traces: most are not sampled.
    for i in 0..200 {
        spans.push(span(
            i,
            1,
            CLIENT,
            1,
            false,
            &[
                ("db.system", "postgresql"),
                ("db.statement", "SELECT * FROM users WHERE id = 42"),
            ],
        ));
    }
    // A slow redis span, an error span, and a fast child of the slow trace.
    spans.push(span(
        1000,
        1,
        CLIENT,
        50,
        false,
        &[("db.system", "redis"), ("db.statement", "GET session:123")],
    ));
    spans.push(span(
        1000,
        2,
        CLIENT,
        1,
        false,
        &[("db.system", "redis"), ("db.statement", "GET user:1")],
    ));
    spans.push(span(
        2000,
        1,
        SERVER,
        5,
        true,
        &[("http.request.method", "GET"), ("http.route", "/x")],
    ));
    let resp = post_proto(&agent, request("shop", spans).encode_to_vec()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-protobuf");
    let body = ExportTraceServiceResponse::decode(resp.bytes().await.unwrap()).unwrap();
    assert!(body.partial_success.is_none());

    eventually(10, "aggregates of all 203 spans", || {
        col.aggregate_count() == 203
    })
    .await;
    eventually(10, "kept spans", || col.spans().len() >= 3).await;
    let shipped = col.spans();
    let slow = shipped
        .iter()
        .find(|s| s.class == DependencyClass::Redis as i32 && s.duration_ns >= 50_000_000)
        .unwrap();
    assert_eq!(slow.kept, KeepReason::Slow as i32);
    assert_eq!(slow.flags, vec![SpanFlag::Slow as i32]);
    assert_eq!(slow.statement, "GET session:?");
    assert_eq!(slow.peer, "");
    let child = shipped
        .iter()
        .find(|s| s.statement == "GET user:?")
        .expect("child of a slow trace kept with it");
    assert_eq!(child.kept, KeepReason::Forced as i32);
    let err = shipped
        .iter()
        .find(|s| s.kept == KeepReason::Error as i32)
        .unwrap();
    assert_eq!(err.operation, "GET /x");
    assert!(shipped.iter().all(|s| !s.statement.contains("42")));

    {
        let seen = col.seen.lock().unwrap();
        assert!(seen.auth.iter().all(|a| a == "Bearer test-token"));
        // Sequences increase by one within the instance.
        let seqs: Vec<u64> = seen.batches.iter().map(|b| b.sequence).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
        let stats = seen.batches.last().unwrap().stats.clone().unwrap();
        assert_eq!(stats.spans_received, 203);
    }
    agent.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn otlp_http_json_with_gzip_as_the_spec_shows_it() {
    let spool = tempfile::tempdir().unwrap();
    let col = FakeCollector::start().await;
    let agent = start_agent(test_config(Some(col.url()), spool.path())).await;
    let now = now_ns();
    let json = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"checkout"}}}}]}},
        "scopeSpans":[{{"scope":{{"name":"x"}},"spans":[{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
        "name":"SELECT","kind":3,"startTimeUnixNano":"{}","endTimeUnixNano":"{}",
        "attributes":[{{"key":"db.system.name","value":{{"stringValue":"mysql"}}}},{{"key":"db.query.text","value":{{"stringValue":"SELECT a FROM t WHERE b IN (1,2,3)"}}}},
        {{"key":"server.port","value":{{"intValue":"3307"}}}},{{"key":"server.address","value":{{"stringValue":"db9"}}}}],
        "status":{{"code":2,"message":"deadlock"}}}}]}}]}}]}}"#,
        now - 300_000_000,
        now
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(json.as_bytes()).unwrap();
    let resp = http()
        .post(format!("http://{}/v1/traces", agent.otlp_http.unwrap()))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "{}");
    eventually(10, "the span", || col.spans().len() == 1).await;
    let s = &col.spans()[0];
    assert_eq!(s.service, "checkout");
    assert_eq!(s.peer, "db9:3307");
    assert_eq!(s.statement, "SELECT a FROM t WHERE b IN (?)");
    assert_eq!(s.operation, "SELECT t");
    assert_eq!(s.status_message, "deadlock");
    assert_eq!(s.flags, vec![SpanFlag::Slow as i32, SpanFlag::Error as i32]);
    agent.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn bad_input_gets_400_in_the_protocol_error_form_and_partial_success() {
    let spool = tempfile::tempdir().unwrap();
    let mut cfg = test_config(None, spool.path());
    cfg.limits.max_request_bytes = 64 * 1024;
    cfg.limits.max_decompressed_bytes = 1024 * 1024;
    let agent = start_agent(cfg).await;
    let url = format!("http://{}/v1/traces", agent.otlp_http.unwrap());

    // Malformed protobuf.
    let r = post_proto(&agent, vec![0xff, 0xff, 0xff]).await;
    assert_eq!(r.status(), 400);
    let st = rpc::Status::decode(r.bytes().await.unwrap()).unwrap();
    assert_eq!(st.code, rpc::INVALID_ARGUMENT);
    assert!(
        st.message.contains("malformed OTLP protobuf"),
        "{}",
        st.message
    );

    // Malformed JSON.
    let r = http()
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"resourceSpans\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("malformed OTLP/JSON"),
        "{v}"
    );

    // Wrong content type.
    let r = http()
        .post(&url)
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Huge body.
    let r = post_proto(&agent, vec![0; 100 * 1024]).await;
    assert_eq!(r.status(), 400);
    assert!(rpc::Status::decode(r.bytes().await.unwrap())
        .unwrap()
        .message
        .contains("larger than"));

    // Gzip bomb: small on the wire, huge inflated.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; 20 * 1024 * 1024]).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 64 * 1024);
    let r = http()
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // All ids invalid → 400; some invalid → 200 with partial_success.
    let mut zero = span(1, 1, SERVER, 1, false, &[]);
    zero.trace_id = vec![0; 16];
    let r = post_proto(&agent, request("s", vec![zero.clone()]).encode_to_vec()).await;
    assert_eq!(r.status(), 400);
    assert!(rpc::Status::decode(r.bytes().await.unwrap())
        .unwrap()
        .message
        .contains("all zeros"));
    let mut short = span(2, 1, SERVER, 1, false, &[]);
    short.span_id = vec![1, 2, 3];
    let mut ancient = span(3, 1, SERVER, 1, false, &[]);
    ancient.start_time_unix_nano = 1;
    let ok = span(4, 1, SERVER, 1, false, &[]);
    let r = post_proto(
        &agent,
        request("s", vec![zero, short, ancient, ok]).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status(), 200);
    let body = ExportTraceServiceResponse::decode(r.bytes().await.unwrap()).unwrap();
    let ps = body.partial_success.unwrap();
    assert_eq!(ps.rejected_spans, 3);
    assert!(
        ps.error_message.contains("spans[0]") && ps.error_message.contains("all zeros"),
        "{}",
        ps.error_message
    );
    // Rejected spans are counted, as `invalid`.
    assert_eq!(agent.metrics.dropped_count(DropReason::Invalid), 4);
    agent.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn zipkin_v2_json_sample_from_the_zipkin_docs() {
    let spool = tempfile::tempdir().unwrap();
    let col = FakeCollector::start().await;
    let agent = start_agent(test_config(Some(col.url()), spool.path())).await;
    let ts = now_ns() / 1000 - 1_000_000;
    // The shape of Zipkin's own example (zipkin.io/zipkin-api, POST /spans), with fresh times.
    let body = format!(
        r#"[{{"id":"352bff9a74ca9ad2","traceId":"5af7183fb1d4cf5f","parentId":"6b221d5bc9e6496c","name":"get /api",
        "timestamp":{ts},"duration":1431000,"kind":"SERVER",
        "localEndpoint":{{"serviceName":"backend","ipv4":"192.168.99.1","port":3306}},
        "remoteEndpoint":{{"ipv4":"172.19.0.2","port":58648}},
        "tags":{{"http.method":"GET","http.path":"/api","http.route":"/api","http.status_code":"200"}}}},
        {{"id":"452bff9a74ca9ad3","traceId":"5af7183fb1d4cf5f","parentId":"352bff9a74ca9ad2","name":"query",
        "timestamp":{ts},"duration":2000,"kind":"CLIENT","localEndpoint":{{"serviceName":"backend"}},
        "remoteEndpoint":{{"serviceName":"mysql","ipv4":"10.0.0.7","port":3306}},
        "tags":{{"sql.query":"select * from orders where id = 99"}}}},
        {{"id":"552bff9a74ca9ad4","traceId":"6af7183fb1d4cf5f","name":"set","timestamp":{ts},"duration":100,"kind":"CLIENT",
        "localEndpoint":{{"serviceName":"backend"}},"remoteEndpoint":{{"serviceName":"redis","port":6380,"ipv4":"10.0.0.8"}},
        "tags":{{"error":"READONLY"}}}}]"#
    );
    let r = http()
        .post(format!("http://{}/api/v2/spans", agent.zipkin.unwrap()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    eventually(10, "three zipkin spans", || col.spans().len() == 3).await;
    let spans = col.spans();
    let server = spans
        .iter()
        .find(|s| s.class == DependencyClass::HttpServer as i32)
        .unwrap();
    assert_eq!(server.operation, "GET /api");
    assert_eq!(server.kept, KeepReason::Slow as i32);
    assert_eq!(&server.trace_id[..8], &[0; 8]);
    let db = spans
        .iter()
        .find(|s| s.class == DependencyClass::Db as i32)
        .unwrap();
    assert_eq!(
        (
            db.peer.as_str(),
            db.db_system.as_str(),
            db.statement.as_str()
        ),
        (
            "10.0.0.7:3306",
            "mysql",
            "select * from orders where id = ?"
        )
    );
    assert_eq!(db.kept, KeepReason::Forced as i32);
    let redis = spans
        .iter()
        .find(|s| s.class == DependencyClass::Redis as i32)
        .unwrap();
    assert_eq!(
        (redis.kept, redis.peer.as_str()),
        (KeepReason::Error as i32, "10.0.0.8:6380")
    );

    let r = http()
        .post(format!("http://{}/api/v2/spans", agent.zipkin.unwrap()))
        .body("[{")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("malformed Zipkin"));
    agent.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn otlp_grpc_export_and_invalid_argument() {
    let spool = tempfile::tempdir().unwrap();
    let col = FakeCollector::start().await;
    let agent = start_agent(test_config(Some(col.url()), spool.path())).await;
    let mut client = TraceServiceClient::connect(format!("http://{}", agent.otlp_grpc.unwrap()))
        .await
        .unwrap();
    let resp = client
        .export(request(
            "grpc-svc",
            vec![span(1, 1, SERVER, 2000, false, &[])],
        ))
        .await
        .unwrap();
    assert!(resp.into_inner().partial_success.is_none());
    eventually(10, "the grpc span", || col.spans().len() == 1).await;
    assert_eq!(col.spans()[0].service, "grpc-svc");
    let mut bad = span(2, 1, SERVER, 1, false, &[]);
    bad.trace_id = vec![1];
    let err = client
        .export(request("grpc-svc", vec![bad]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("traceId must be 16 bytes"),
        "{}",
        err.message()
    );
    agent.shutdown(Duration::from_secs(1)).await;
}

/// Sends raw bytes as a gRPC request message (what a broken client might send).
#[derive(Clone, Copy, Default)]
struct RawRequestCodec;
struct RawEncoder;
struct ResponseDecoder;

impl tonic::codec::Codec for RawRequestCodec {
    type Encode = bytes::Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<ExportTraceServiceResponse>, tonic::Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

#[tokio::test]
async fn otlp_grpc_gzip_malformed_and_unknown_methods() {
    let spool = tempfile::tempdir().unwrap();
    let col = FakeCollector::start().await;
    let agent = start_agent(test_config(Some(col.url()), spool.path())).await;
    let url = format!("http://{}", agent.otlp_grpc.unwrap());
    // A gzip-compressed export, as SDKs send with compression = gzip.
    let mut client = TraceServiceClient::connect(url.clone())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    client
        .export(request(
            "gzip-svc",
            vec![span(1, 1, SERVER, 2000, false, &[("http.route", "/a")])],
        ))
        .await
        .unwrap();
    eventually(10, "the gzip span", || col.spans().len() == 1).await;
    assert_eq!(col.spans()[0].service, "gzip-svc");
    // Bytes that are no protobuf message: INVALID_ARGUMENT with the reason.
    let channel = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let grpc = tonic::client::Grpc::new(channel);
    let call = |path: &'static str, body: &'static [u8]| {
        let mut grpc = grpc.clone();
        async move {
            grpc.ready().await.unwrap();
            grpc.unary(
                tonic::Request::new(bytes::Bytes::from_static(body)),
                tonic::codegen::http::uri::PathAndQuery::from_static(path),
                RawRequestCodec,
            )
            .await
        }
    };
    const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    let err = call(EXPORT, &[0x0a, 0xff]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("varint"), "{}", err.message());
    let err = call(EXPORT, &[0x0a, 0x05, 0x01]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("length"), "{}", err.message());
    // An empty request is a valid, empty export.
    assert!(call(EXPORT, &[]).await.is_ok());
    // Another method of the service: UNIMPLEMENTED.
    let err = call(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Other",
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert_eq!(col.spans().len(), 1);
    agent.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn collector_outage_spools_and_replays_in_order_exactly_once() {
    let spool = tempfile::tempdir().unwrap();
    let col = FakeCollector::start().await;
    col.fail_with(503);
    let agent = start_agent(test_config(Some(col.url()), spool.path())).await;
    let mut sent = 0u64;
    let built = || {
        agent
            .metrics
            .batches_built
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    for round in 0..5u32 {
        let before = built();
        let spans = (0..100)
            .map(|i| span(round * 1000 + i, 1, SERVER, 2000, false, &[]))
            .collect();
        assert_eq!(
            post_proto(&agent, request("s", spans).encode_to_vec())
                .await
                .status(),
            200
        );
        sent += 100;
        // Each round in batches of its own: the next one is posted once this one is cut
        // (nothing else is pending, so the batch built now is this round's).
        eventually(10, "the round's batch built", || built() > before).await;
    }
    eventually(10, "batches spooled", || agent.spool.usage().0 >= 3).await;
    assert!(col.seen.lock().unwrap().batches.is_empty());
    col.fail_with(200);
    eventually(20, "all spans delivered", || {
        col.spans().len() as u64 == sent
    })
    .await;
    eventually(5, "spool empty", || agent.spool.usage() == (0, 0)).await;
    {
        let seen = col.seen.lock().unwrap();
        let seqs: Vec<u64> = seen.batches.iter().map(|b| b.sequence).collect();
        let mut sorted = seqs.clone();
        sorted.sort();
        assert_eq!(seqs, sorted, "replayed in order");
        let ids: HashSet<Vec<u8>> = seen
            .batches
            .iter()
            .flat_map(|b| b.spans.iter().map(|s| s.trace_id.clone()))
            .collect();
        assert_eq!(ids.len() as u64, sent, "each span once");
        assert_eq!(
            seen.batches
                .iter()
                .flat_map(|b| &b.aggregates)
                .map(|a| a.count)
                .sum::<u64>(),
            sent
        );
    }
    agent.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn spool_survives_an_agent_restart() {
    let spool = tempfile::tempdir().unwrap();
    let col = FakeCollector::start().await;
    col.fail_with(502);
    let agent = start_agent(test_config(Some(col.url()), spool.path())).await;
    let spans = (0..50)
        .map(|i| span(i, 1, SERVER, 2000, true, &[]))
        .collect();
    assert_eq!(
        post_proto(&agent, request("s", spans).encode_to_vec())
            .await
            .status(),
        200
    );
    agent.shutdown(Duration::from_millis(300)).await;
    assert!(col.spans().is_empty());
    col.fail_with(200);
    let agent = start_agent(test_config(Some(col.url()), spool.path())).await;
    eventually(10, "spans from the previous run", || {
        col.spans().len() == 50
    })
    .await;
    agent.shutdown(Duration::from_secs(1)).await;
}

/// The batch files and `.json` notes in the dead-letter folder.
fn dead_letters(spool: &std::path::Path) -> (Vec<std::path::PathBuf>, Vec<String>) {
    let mut files: Vec<_> = std::fs::read_dir(spool.join("dead-letter"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let notes = files
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    files.retain(|p| p.extension().is_some_and(|x| x == "swb"));
    (files, notes)
}

#[tokio::test]
async fn rejected_batch_goes_to_the_dead_letter_folder_and_shipping_goes_on() {
    let spool = tempfile::tempdir().unwrap();
    let col = FakeCollector::start().await;
    col.script(&[400]);
    let agent = start_agent(test_config(Some(col.url()), spool.path())).await;
    let spans = (0..7).map(|i| span(i, 1, SERVER, 1, true, &[])).collect();
    assert_eq!(
        post_proto(&agent, request("s", spans).encode_to_vec())
            .await
            .status(),
        200
    );
    eventually(10, "rejected spans counted", || {
        agent.metrics.dropped_count(DropReason::Rejected) == 7
    })
    .await;
    // The queue goes on: the next batch is shipped.
    let spans = (10..15).map(|i| span(i, 1, SERVER, 1, true, &[])).collect();
    post_proto(&agent, request("s", spans).encode_to_vec()).await;
    eventually(10, "the next batch delivered", || col.spans().len() == 5).await;
    // Batches leave in order, so had the refused one been retried it would have been sent
    // again before the second: one attempt each.
    assert_eq!(
        col.seen.lock().unwrap().attempts,
        2,
        "a 400 is never retried"
    );
    // The collector records a batch before the agent reads its answer and removes it from
    // the spool, so the spool empties a moment after the spans arrive.
    eventually(5, "spool empty", || agent.spool.usage().0 == 0).await;
    let (files, notes) = dead_letters(spool.path());
    assert_eq!((files.len(), notes.len()), (1, 1), "{files:?}");
    assert!(notes[0].contains("\"status\": 400"), "{}", notes[0]);
    assert!(notes[0].contains("told to fail"), "{}", notes[0]);
    assert!(notes[0].contains("spans[0].trace_id"), "{}", notes[0]);
    let text = agent_metrics(&agent).await;
    for line in [
        "stormwatch_agent_spans_dropped_total{reason=\"rejected\"} 7",
        "stormwatch_agent_spans_kept_total{reason=\"error\"} 12",
        "stormwatch_agent_dead_letter_batches_total 1",
        "stormwatch_agent_dead_letter_files 1",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    // The collector hears of it with the next batch (the overview's agent table shows it).
    let stats = col
        .seen
        .lock()
        .unwrap()
        .batches
        .last()
        .unwrap()
        .stats
        .clone()
        .unwrap();
    assert_eq!(stats.dead_letter_batches, 1, "{stats:?}");
    assert_eq!(stats.spans_lost, 7, "{stats:?}");
    agent.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_too_large_batch_that_cannot_be_split_is_a_dead_letter() {
    let spool = tempfile::tempdir().unwrap();
    let col = FakeCollector::start().await;
    // Every batch with a span is too large: 3 → 1 + 2 → 1 + 1 + 1, three dead letters.
    col.max_spans.store(0, std::sync::atomic::Ordering::SeqCst);
    let agent = start_agent(test_config(Some(col.url()), spool.path())).await;
    let spans = (0..3).map(|i| span(i, 1, SERVER, 1, true, &[])).collect();
    post_proto(&agent, request("s", spans).encode_to_vec()).await;
    eventually(10, "three dead letters", || {
        agent
            .metrics
            .dead_letter_batches
            .load(std::sync::atomic::Ordering::Relaxed)
            == 3
    })
    .await;
    assert_eq!(agent.metrics.dropped_count(DropReason::TooLarge), 3);
    let (files, notes) = dead_letters(spool.path());
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(
        notes.iter().all(|n| n.contains("\"status\": 413")),
        "{notes:?}"
    );
    // Shipping goes on once batches fit.
    col.max_spans
        .store(usize::MAX, std::sync::atomic::Ordering::SeqCst);
    let spans = (10..12).map(|i| span(i, 1, SERVER, 1, true, &[])).collect();
    post_proto(&agent, request("s", spans).encode_to_vec()).await;
    eventually(10, "the next batch delivered", || col.spans().len() == 2).await;
    agent.shutdown(Duration::from_secs(1)).await;
}

/// Every received span is either in the aggregates the collector stored or counted as dropped
/// with its aggregates, whatever dropped it: the spool evicting batches when full, a 400 and an
/// unsplittable 413 sending batches to the dead-letter folder.
#[tokio::test]
async fn received_spans_are_stored_in_aggregates_or_counted_as_dropped() {
    use stormwatch_agent::config::{Compression, WhenFull};
    let spool = tempfile::tempdir().unwrap();
    let col = FakeCollector::start().await;
    col.fail_with(503);
    let mut cfg = test_config(Some(col.url()), spool.path());
    // The smallest spool the config allows, filled by ~1.1 KiB spans in 100-span batches.
    cfg.shipping.spool_max_bytes = 1024 * 1024;
    cfg.shipping.when_full = WhenFull::DropOldest;
    cfg.shipping.compression = Compression::None;
    cfg.shipping.max_batch_spans = 100;
    let agent = start_agent(cfg).await;
    let payload = "x".repeat(1000);
    let mut sent = 0u32;
    // Collector down: the spool fills and evicts its oldest batches.
    for round in 0..20u32 {
        let spans = (0..100)
            .map(|i| {
                span(
                    round * 1000 + i,
                    1,
                    SERVER,
                    1,
                    true,
                    &[("payload", &payload)],
                )
            })
            .collect();
        post_proto(&agent, request("s", spans).encode_to_vec()).await;
        sent += 100;
    }
    eventually(20, "all spans counted and the spool overflowed", || {
        agent.metrics.kept_count(KeepReason::Error) == u64::from(sent)
            && agent.metrics.dropped_count(DropReason::SpoolFull) > 0
    })
    .await;
    // Back, but it refuses the first batch for good.
    col.script(&[400]);
    col.fail_with(200);
    eventually(20, "the spool drained", || {
        agent.spool.usage().0 == 0 && agent.metrics.dropped_count(DropReason::Rejected) > 0
    })
    .await;
    // A one-span batch the collector finds too large.
    col.script(&[413]);
    let spans = vec![span(99_999, 1, SERVER, 1, true, &[])];
    post_proto(&agent, request("s", spans).encode_to_vec()).await;
    sent += 1;
    eventually(10, "the 413 batch dead-lettered", || {
        agent.metrics.dropped_count(DropReason::TooLarge) == 1
    })
    .await;

    let m = &agent.metrics;
    let dropped = || -> u64 {
        DropReason::ALL
            .iter()
            .map(|r| m.aggregated_dropped_count(*r))
            .sum()
    };
    eventually(10, "every span accounted for", || {
        col.aggregate_count() + dropped() >= u64::from(sent)
    })
    .await;
    assert_eq!(m.received_total(), u64::from(sent));
    assert_eq!(
        m.received_total(),
        col.aggregate_count() + dropped(),
        "received = stored aggregates + dropped aggregates"
    );
    for r in [
        DropReason::SpoolFull,
        DropReason::Rejected,
        DropReason::TooLarge,
    ] {
        assert!(m.aggregated_dropped_count(r) > 0, "{r:?} not exercised");
    }
    // What the agent counted as rejected is what the collector answered 400 to.
    let rejected: u64 = col
        .seen
        .lock()
        .unwrap()
        .refused
        .iter()
        .filter(|(code, _)| *code == 400)
        .flat_map(|(_, b)| &b.aggregates)
        .map(|a| a.count)
        .sum();
    assert_eq!(rejected, m.aggregated_dropped_count(DropReason::Rejected));
    let text = agent_metrics(&agent).await;
    assert!(
        text.contains("stormwatch_agent_aggregated_spans_dropped_total{reason=\"too_large\"} 1"),
        "{text}"
    );
    agent.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn large_spans_are_let_go_under_byte_pressure_and_a_kept_trace_stays_kept() {
    use stormwatch_agent::config::Band;
    use stormwatch_agent::metrics::Pressure;
    let spool = tempfile::tempdir().unwrap();
    let col = FakeCollector::start().await;
    let mut cfg = test_config(Some(col.url()), spool.path());
    cfg.sampling.max_held_bytes = 1024 * 1024;
    cfg.sampling.bands = vec![Band {
        below: 1.0,
        share: 0.0,
    }];
    let agent = start_agent(cfg).await;
    let m = agent.metrics.clone();
    // Trace 1 is kept: a slow server span.
    let root = span(1, 1, SERVER, 5_000, false, &[("http.route", "/checkout")]);
    assert_eq!(
        post_proto(&agent, request("shop", vec![root]).encode_to_vec())
            .await
            .status(),
        200
    );
    // Then fast spans of other traces with 32 attributes of 1 KiB: 200 of them, some 10 MB
    // waiting, ten times the bound; the span bound (50,000) is far.
    let values: Vec<(String, String)> = (0..32)
        .map(|a| (format!("app.k{a}"), format!("{a:02}").repeat(512)))
        .collect();
    let attrs: Vec<(&str, &str)> = values
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for r in 0..10u32 {
        let spans = (0..20)
            .map(|i| span(100 + r * 20 + i, 1, SERVER, 1, false, &attrs))
            .collect();
        let resp = post_proto(&agent, request("shop", spans).encode_to_vec()).await;
        assert_eq!(resp.status(), 200);
    }
    // A fast child of trace 1, within its window: kept with it.
    let child = span(
        1,
        2,
        CLIENT,
        1,
        false,
        &[("db.system", "redis"), ("db.statement", "GET late:1")],
    );
    assert_eq!(
        post_proto(&agent, request("shop", vec![child]).encode_to_vec())
            .await
            .status(),
        200
    );
    eventually(10, "the late child shipped", || {
        col.spans().iter().any(|s| s.statement == "GET late:?")
    })
    .await;
    let late = col
        .spans()
        .into_iter()
        .find(|s| s.statement == "GET late:?")
        .unwrap();
    assert_eq!(late.kept, KeepReason::Forced as i32);
    assert!(m.pressure_evicted_count(Pressure::HeldBytes) > 150);
    assert_eq!(m.pressure_evicted_count(Pressure::PendingSpans), 0);
    let text = agent_metrics(&agent).await;
    assert!(
        text.contains(
            "stormwatch_agent_sampler_pressure_evicted_spans_total{bound=\"held_bytes\"}"
        ),
        "{text}"
    );
    agent.shutdown(Duration::from_secs(2)).await;
    // Every received span is kept, not sampled (under pressure or not) or dropped.
    let kept: u64 = [
        KeepReason::Sampled,
        KeepReason::Slow,
        KeepReason::Error,
        KeepReason::Forced,
    ]
    .map(|r| m.kept_count(r))
    .iter()
    .sum();
    let dropped: u64 = DropReason::ALL.map(|r| m.dropped_count(r)).iter().sum();
    let not_sampled = m.not_sampled.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(m.received_total(), 202);
    assert_eq!((kept, dropped), (2, 0));
    assert_eq!(m.received_total(), kept + not_sampled + dropped);
}

async fn agent_metrics(agent: &stormwatch_agent::Agent) -> String {
    http()
        .get(format!("http://{}/metrics", agent.admin.unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn unauthorized_keeps_retrying_and_too_large_splits() {
    let spool = tempfile::tempdir().unwrap();
    let col = FakeCollector::start().await;
    col.fail_with(401);
    let agent = start_agent(test_config(Some(col.url()), spool.path())).await;
    let spans = (0..40)
        .map(|i| span(i, 1, SERVER, 2000, false, &[]))
        .collect();
    assert_eq!(
        post_proto(&agent, request("s", spans).encode_to_vec())
            .await
            .status(),
        200
    );
    eventually(10, "several attempts", || {
        col.seen.lock().unwrap().attempts >= 3
    })
    .await;
    assert!(col.spans().is_empty());
    // Too large: the collector takes at most 15 spans per batch; the agent splits the 40-span
    // batch (40 → 20 + 20 → 10 + 10 + 10 + 10) until every piece fits.
    col.max_spans.store(15, std::sync::atomic::Ordering::SeqCst);
    col.fail_with(200);
    eventually(10, "all 40 delivered", || col.spans().len() == 40).await;
    {
        let seen = col.seen.lock().unwrap();
        assert!(seen.batches.iter().all(|b| b.spans.len() <= 15));
        let ids: HashSet<Vec<u8>> = seen
            .batches
            .iter()
            .flat_map(|b| b.spans.iter().map(|s| s.trace_id.clone()))
            .collect();
        assert_eq!(ids.len(), 40);
    }
    agent.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn full_queue_answers_429_with_retry_hint() {
    let spool = tempfile::tempdir().unwrap();
    let mut cfg = test_config(None, spool.path());
    cfg.limits.queue_spans = 10;
    // A spool that blocks and is tiny stalls the pipeline, so the queue fills.
    cfg.shipping.when_full = stormwatch_agent::config::WhenFull::Block;
    cfg.shipping.spool_max_bytes = 1024 * 1024;
    cfg.shipping.max_batch_spans = 1;
    let agent = start_agent(cfg).await;
    let big_attr = "x".repeat(60_000);
    let mut saw_429 = false;
    for round in 0..200u32 {
        let spans = (0..5)
            .map(|i| {
                span(
                    round * 10 + i,
                    1,
                    SERVER,
                    5000,
                    false,
                    &[("blob", big_attr.as_str())],
                )
            })
            .collect();
        let r = post_proto(&agent, request("s", spans).encode_to_vec()).await;
        if r.status() == 429 {
            assert_eq!(r.headers()["retry-after"], "1");
            let st = rpc::Status::decode(r.bytes().await.unwrap()).unwrap();
            assert_eq!(st.code, rpc::RESOURCE_EXHAUSTED);
            assert_eq!(
                st.details[0].type_url,
                "type.googleapis.com/google.rpc.RetryInfo"
            );
            saw_429 = true;
            break;
        }
        assert_eq!(r.status(), 200);
    }
    assert!(saw_429, "the queue never filled");
    assert!(
        agent
            .metrics
            .throttled_requests
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    assert!(agent.metrics.dropped_count(DropReason::QueueFull) >= 5);
    agent.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn full_queue_answers_grpc_resource_exhausted_with_retry_info() {
    let spool = tempfile::tempdir().unwrap();
    let mut cfg = test_config(None, spool.path());
    cfg.limits.queue_spans = 10;
    cfg.shipping.when_full = stormwatch_agent::config::WhenFull::Block;
    cfg.shipping.spool_max_bytes = 1024 * 1024;
    cfg.shipping.max_batch_spans = 1;
    let agent = start_agent(cfg).await;
    let mut client = TraceServiceClient::connect(format!("http://{}", agent.otlp_grpc.unwrap()))
        .await
        .unwrap();
    let big_attr = "x".repeat(60_000);
    let mut exhausted = None;
    for round in 0..200u32 {
        let spans = (0..5)
            .map(|i| {
                span(
                    round * 10 + i,
                    1,
                    SERVER,
                    5000,
                    false,
                    &[("blob", big_attr.as_str())],
                )
            })
            .collect();
        match client.export(request("s", spans)).await {
            Ok(_) => {}
            Err(status) => {
                exhausted = Some(status);
                break;
            }
        }
    }
    let status = exhausted.expect("the queue never filled");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    let details = rpc::Status::decode(status.details()).unwrap();
    assert_eq!(
        details.details[0].type_url,
        "type.googleapis.com/google.rpc.RetryInfo"
    );
    let retry = rpc::RetryInfo::decode(&details.details[0].value[..]).unwrap();
    assert_eq!(retry.retry_delay.unwrap().seconds, 1);
    agent.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn config_edit_changes_thresholds_live_and_a_broken_edit_is_rejected() {
    let spool = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let col = FakeCollector::start().await;
    let path = dir.path().join("agent.toml");
    let write = |threshold: &str| {
        std::fs::write(
            &path,
            format!(
                "collector = \"{}\"\nagent_id = \"a\"\n[listen]\notlp_http = \"127.0.0.1:0\"\notlp_grpc = \"\"\nzipkin = \"\"\nadmin = \"\"\n[shipping]\nflush_interval_ms = 100\nspool_dir = \"{}\"\n[host]\ninterval_s = 0\n[sampling]\n{threshold}\n[[sampling.band]]\nbelow = 1.0\nshare = 0.0\n",
                col.url(),
                spool.path().display()
            ),
        )
        .unwrap();
    };
    write("");
    let source = stormwatch_agent::reload::Source {
        path: Some(path.clone()),
        overrides: Default::default(),
    };
    let cfg = stormwatch_agent::config::load(Some(&path), &Default::default()).unwrap();
    let agent = stormwatch_agent::Agent::start(cfg, source).await.unwrap();
    let db = |i| span(i, 1, CLIENT, 30, false, &[("db.system", "postgresql")]);
    // 30 ms db spans are fast under the default 200 ms threshold: not kept.
    post_proto(&agent, request("s", vec![db(1)]).encode_to_vec()).await;
    eventually(5, "aggregate", || col.aggregate_count() == 1).await;
    assert!(col.spans().is_empty());
    // Lower the threshold by editing the file: picked up by the watcher.
    write("[sampling.thresholds_ms]\ndb = 10");
    eventually(10, "reload applied", || {
        agent.config().sampling.thresholds_ms.db == 10
    })
    .await;
    // Kept: the pipeline applies the new config in its own loop, where a span already waiting
    // may be taken first, and nothing shows when it has; a short pause lets it catch up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    post_proto(&agent, request("s", vec![db(2)]).encode_to_vec()).await;
    eventually(5, "slow db span kept", || col.spans().len() == 1).await;
    // A broken edit: logged, counted, old config stays.
    write("[sampling.thresholds_ms]\ndb = \"fast\"");
    eventually(10, "reload failure counted", || {
        agent
            .metrics
            .reloads_failed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    })
    .await;
    let err = agent.reload().unwrap_err().to_string();
    assert!(
        err.contains("agent.toml line") && err.contains("invalid type"),
        "{err}"
    );
    assert_eq!(agent.config().sampling.thresholds_ms.db, 10);
    agent.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_collector_added_by_reload_receives_what_was_spooled() {
    let spool = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let col = FakeCollector::start().await;
    let path = dir.path().join("agent.toml");
    let body = |collector: &str| {
        format!(
            "{collector}agent_id = \"a\"\n[listen]\notlp_http = \"127.0.0.1:0\"\notlp_grpc = \"\"\nzipkin = \"\"\nadmin = \"\"\n[shipping]\nflush_interval_ms = 100\nspool_dir = \"{}\"\n[host]\ninterval_s = 0\n",
            spool.path().display()
        )
    };
    std::fs::write(&path, body("")).unwrap();
    let source = stormwatch_agent::reload::Source {
        path: Some(path.clone()),
        overrides: Default::default(),
    };
    let cfg = stormwatch_agent::config::load(Some(&path), &Default::default()).unwrap();
    let agent = stormwatch_agent::Agent::start(cfg, source).await.unwrap();
    let spans = (0..20).map(|i| span(i, 1, SERVER, 1, true, &[])).collect();
    assert_eq!(
        post_proto(&agent, request("s", spans).encode_to_vec())
            .await
            .status(),
        200
    );
    eventually(5, "spooled without a collector", || {
        agent.spool.usage().0 >= 1
    })
    .await;
    assert_eq!(col.seen.lock().unwrap().attempts, 0);
    // SIGHUP's path: reload from the same source.
    std::fs::write(&path, body(&format!("collector = \"{}\"\n", col.url()))).unwrap();
    // (The file watcher may apply it too; either way it is in force.)
    agent.reload().unwrap();
    assert_eq!(
        agent.config().collector.as_deref(),
        Some(col.url().as_str())
    );
    eventually(10, "spans shipped after the reload", || {
        col.spans().len() == 20
    })
    .await;
    agent.shutdown(Duration::from_secs(1)).await;
}

/// A declared length over the receiver's limit is refused before the body is sent (the agent
/// reads bodies itself; its servers run through `stormwatch_http`).
#[tokio::test]
async fn oversized_declarations_and_trickled_headers_are_cut_short() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let spool = tempfile::tempdir().unwrap();
    let agent = start_agent(test_config(None, spool.path())).await;
    let addr = agent.otlp_http.unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("larger than"), "{answer}");
    agent.shutdown(Duration::from_secs(2)).await;
}

/// `service.version` of the resources (protobuf and JSON) reaches the collector once per
/// instance and version: the change events behind "errors began 40 s after board 1.4.2
/// appeared on 3 of 4 instances".
#[tokio::test]
async fn service_versions_of_resources_are_shipped_once_per_instance() {
    let spool = tempfile::tempdir().unwrap();
    let col = FakeCollector::start().await;
    let agent = start_agent(test_config(Some(col.url()), spool.path())).await;
    let versioned = |instance: &str, version: &str, trace: u32| {
        let mut r = request("board", vec![span(trace, 1, SERVER, 5, false, &[])]);
        let attrs = &mut r.resource_spans[0].resource.as_mut().unwrap().attributes;
        attrs.push(kv("service.instance.id", instance));
        attrs.push(kv("service.version", version));
        attrs.push(kv("deployment.environment.name", "prod"));
        r.encode_to_vec()
    };
    for (i, (instance, version)) in [
        ("a", "1.4.1"),
        ("b", "1.4.1"),
        ("a", "1.4.1"),
        ("a", "1.4.2"),
    ]
    .into_iter()
    .enumerate()
    {
        let r = post_proto(&agent, versioned(instance, version, i as u32 + 1)).await;
        assert_eq!(r.status(), 200);
    }
    let json = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[
            {{"key":"service.name","value":{{"stringValue":"board"}}}},
            {{"key":"service.instance.id","value":{{"stringValue":"c"}}}},
            {{"key":"service.version","value":{{"stringValue":"1.4.2"}}}}]}},
          "scopeSpans":[{{"spans":[{{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
            "name":"GET /","kind":2,"startTimeUnixNano":"{s}","endTimeUnixNano":"{e}"}}]}}]}}]}}"#,
        s = now_ns() - 5_000_000,
        e = now_ns()
    );
    let r = http()
        .post(format!("http://{}/v1/traces", agent.otlp_http.unwrap()))
        .header("content-type", "application/json")
        .body(json)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    eventually(10, "four version reports", || col.versions().len() >= 4).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let got: Vec<(String, String, String)> = col
        .versions()
        .into_iter()
        .map(|v| {
            assert_eq!(v.service, "board");
            assert!(v.first_seen_ns > 0);
            (v.instance, v.version, v.environment)
        })
        .collect();
    let want = |i: &str, v: &str, e: &str| (i.to_owned(), v.to_owned(), e.to_owned());
    assert_eq!(
        got,
        [
            want("a", "1.4.1", "prod"),
            want("b", "1.4.1", "prod"),
            want("a", "1.4.2", "prod"),
            want("c", "1.4.2", ""),
        ]
    );
    agent.shutdown(std::time::Duration::from_secs(2)).await;
}

/// Dependency calls are counted under the server operation of their service and trace,
/// whether they arrive before it (the usual order: exporters send spans as they end) or after.
#[tokio::test]
async fn calls_are_counted_under_the_server_operation_that_made_them() {
    let spool = tempfile::tempdir().unwrap();
    let col = FakeCollector::start().await;
    let agent = start_agent(test_config(Some(col.url()), spool.path())).await;
    let redis = |trace: u32, id: u32, ms: u64| {
        span(
            trace,
            id,
            CLIENT,
            ms,
            false,
            &[("db.system", "redis"), ("db.statement", "GET k")],
        )
    };
    let server = |trace: u32, route: &str| {
        span(
            trace,
            9,
            SERVER,
            20,
            false,
            &[("http.request.method", "GET"), ("http.route", route)],
        )
    };
    // Trace 1: two calls in one export, its server span in the next. Trace 2: the server
    // span first, its call after. Trace 3: a call whose server span never comes.
    let exports = [
        vec![redis(1, 1, 4), redis(1, 2, 6)],
        vec![server(1, "/timetable"), server(2, "/classes")],
        vec![redis(2, 1, 3), redis(3, 1, 1)],
    ];
    for spans in exports {
        let r = post_proto(&agent, request("board", spans).encode_to_vec()).await;
        assert_eq!(r.status(), 200);
    }
    eventually(10, "two rows of calls per operation", || {
        col.entry_calls().len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got: Vec<(String, String, u64, u64)> = col
        .entry_calls()
        .into_iter()
        .map(|e| {
            assert_eq!(e.service, "board");
            assert_eq!(e.class, DependencyClass::Redis as i32);
            assert_eq!(e.minute % 60, 0);
            (e.entry, e.peer, e.count, e.sum_ns)
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("GET /classes".to_owned(), String::new(), 1, 3_000_000),
            ("GET /timetable".to_owned(), String::new(), 2, 10_000_000),
        ]
    );
    // All six spans are in the aggregates, the unattributed call included.
    eventually(10, "aggregates of all six spans", || {
        col.aggregate_count() == 6
    })
    .await;
    agent.shutdown(Duration::from_secs(2)).await;
}
