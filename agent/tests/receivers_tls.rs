//! The receivers over TLS (`[listen] tls_cert`, `tls_key`): OTLP/HTTP and OTLP/gRPC from apps
//! on other hosts, verified against the agent's certificate; plain connections get nowhere.

mod common;

use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A CA's PEM, and a certificate for `localhost` it signed with its key, written into `dir`.
fn certificates(dir: &std::path::Path) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (c, k) = (dir.join("agent.pem"), dir.join("agent-key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (ca_pem, c, k)
}

#[tokio::test]
async fn otlp_over_tls_on_http_and_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let col = FakeCollector::start().await;
    let mut config = test_config(Some(col.url()), dir.path());
    config.listen.tls_cert = Some(cert);
    config.listen.tls_key = Some(key);
    let agent = start_agent(config).await;

    // OTLP/HTTP over HTTPS, the agent's certificate verified.
    let port = agent.otlp_http.unwrap().port();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = client
        .post(format!("https://localhost:{port}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(request("tls-http", vec![span(1, 1, 2, 5, false, &[])]).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Plain HTTP to the TLS port is not served.
    let plain = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(request("plain", vec![span(2, 1, 2, 5, false, &[])]).encode_to_vec())
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);

    // OTLP/gRPC over TLS.
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&ca))
        .domain_name("localhost");
    let channel = tonic::transport::Channel::from_shared(format!(
        "https://localhost:{}",
        agent.otlp_grpc.unwrap().port()
    ))
    .unwrap()
    .tls_config(tls)
    .unwrap()
    .connect()
    .await
    .unwrap();
    TraceServiceClient::new(channel)
        .export(request("tls-grpc", vec![span(3, 1, 2, 5, false, &[])]))
        .await
        .unwrap();

    eventually(10, "both TLS exports counted", || {
        col.aggregate_count() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(col.aggregate_count(), 2, "the plain request must not count");
    agent.shutdown(Duration::from_secs(2)).await;
}
