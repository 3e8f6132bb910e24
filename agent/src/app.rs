//! Wires the agent together and shuts it down in order.
//!
//! Start: open the spool, bind every listener (a busy port fails start-up with its name), then
//! spawn receivers, pipeline, shipper, host sampler and reloader.
//! Shutdown: receivers stop accepting and finish in-flight requests; the pipeline drains its
//! queue and writes a last batch; the shipper gets a grace period to empty the spool; whatever
//! is left stays on disk and is replayed by the next start.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use stormwatch_http::tls::Tls;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, Listen};
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::receivers::otlp_grpc::{self, GrpcReceiver};
use crate::receivers::otlp_http::{self, ReceiverState};
use crate::receivers::zipkin;
use crate::reload::{self, Source};
use crate::ship::shipper::{Sequencer, Shipper};
use crate::ship::spool::Spool;
use crate::{admin, host, probes};

/// Time the pipeline always gets to write its last batch to the spool on shutdown, even when
/// receivers used up the grace period.
pub const PIPELINE_FLOOR: Duration = Duration::from_secs(1);

/// A running agent.
pub struct Agent {
    /// Bound addresses (useful with port 0 in tests); `None` when disabled.
    pub otlp_http: Option<SocketAddr>,
    pub otlp_grpc: Option<SocketAddr>,
    pub zipkin: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    pub spool: Arc<Spool>,
    pub seq: Arc<Sequencer>,
    config_tx: Arc<watch::Sender<Arc<Config>>>,
    source: Source,
    stop_receivers: watch::Sender<bool>,
    stop_pipeline: watch::Sender<bool>,
    stop_shipper: watch::Sender<bool>,
    stop_bg: watch::Sender<bool>,
    receivers: Vec<JoinHandle<()>>,
    pipeline: JoinHandle<()>,
    shipper: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

async fn bind(what: &str, addr: &str) -> anyhow::Result<Option<TcpListener>> {
    let Some(a) = Listen::addr(addr) else {
        return Ok(None);
    };
    let l = TcpListener::bind(a)
        .await
        .with_context(|| format!("cannot listen on {addr} for {what} (listen.{what})"))?;
    Ok(Some(l))
}

fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<Arc<Tls>>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        // Read timeouts and a connection cap: a client trickling bytes cannot hold the
        // receivers (TCP_NODELAY is set there too).
        stormwatch_http::serve_with(
            listener,
            router,
            stormwatch_http::Limits::default(),
            tls,
            shutdown,
        )
        .await;
    })
}

/// TLS connections for the gRPC server: handshakes on their own tasks (bounded by the header
/// read timeout), finished streams handed over in arrival order.
fn tls_incoming(
    listener: TcpListener,
    tls: Arc<Tls>,
) -> impl futures_util::Stream<
    Item = std::io::Result<stormwatch_http::tls::TlsStream<tokio::net::TcpStream>>,
> {
    let (tx, mut rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "accepting a gRPC connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, sender) = (tls.acceptor(), tx.clone());
            tokio::spawn(async move {
                let timeout = stormwatch_http::HEADER_READ_TIMEOUT;
                match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => {
                        let _ = sender.send(Ok(s)).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

impl Agent {
    /// Starts everything. `source` is kept for reloads.
    pub async fn start(config: Config, source: Source) -> anyhow::Result<Agent> {
        let metrics = Arc::new(Metrics::default());
        let spool_dir = config.shipping.spool_dir();
        let spool = Arc::new(
            Spool::open(
                &spool_dir,
                crate::ship::spool::Options::of(&config.shipping),
                metrics.clone(),
            )
            .with_context(|| {
                format!(
                    "cannot open the spool directory {} (shipping.spool_dir / --spool-dir)",
                    spool_dir.display()
                )
            })?,
        );
        let seq = Arc::new(Sequencer::new(config.agent_id()));
        let (ingest, rx) = Ingest::new(config.limits.queue_spans, metrics.clone());
        let versions = ingest.versions.clone();
        let signals = ingest.signals.clone();
        let (hosts_tx, hosts_rx) = mpsc::channel(64);
        // Room for a few seconds of samples from a few dozen databases.
        let (probes_tx, probes_rx) = mpsc::channel(256);
        let (stop_receivers, _) = watch::channel(false);
        let (stop_pipeline, _) = watch::channel(false);
        let (stop_shipper, _) = watch::channel(false);
        let (stop_bg, _) = watch::channel(false);

        let l_http = bind("otlp_http", &config.listen.otlp_http).await?;
        let l_grpc = bind("otlp_grpc", &config.listen.otlp_grpc).await?;
        let l_zipkin = bind("zipkin", &config.listen.zipkin).await?;
        let l_admin = bind("admin", &config.listen.admin).await?;
        let addr = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
        let (otlp_http_addr, otlp_grpc_addr, zipkin_addr, admin_addr) = (
            addr(&l_http),
            addr(&l_grpc),
            addr(&l_zipkin),
            addr(&l_admin),
        );

        // Loaded before anything is served, so a certificate that cannot be used fails the start.
        let tls = match config.listen.tls_files() {
            Some(files) => {
                Some(Tls::load(files).context("loading listen.tls_cert / listen.tls_key")?)
            }
            None => None,
        };
        let max_decompressed = config.limits.max_decompressed_bytes;
        let agent_host = config.agent_id();
        let (config_tx, config_rx) = watch::channel(Arc::new(config));
        let config_tx = Arc::new(config_tx);
        let state = ReceiverState {
            ingest: ingest.clone(),
            config: config_rx.clone(),
        };

        let mut receivers = Vec::new();
        if let Some(l) = l_http {
            receivers.push(serve_http(
                l,
                otlp_http::router(state.clone()),
                tls.clone(),
                stop_receivers.subscribe(),
            ));
        }
        if let Some(l) = l_zipkin {
            receivers.push(serve_http(
                l,
                zipkin::router(state.clone()),
                tls.clone(),
                stop_receivers.subscribe(),
            ));
        }
        if let Some(l) = l_grpc {
            let svc = otlp_grpc::service(
                GrpcReceiver {
                    ingest: ingest.clone(),
                    config: config_rx.clone(),
                },
                max_decompressed,
            );
            let (metrics_svc, logs_svc) = otlp_grpc::signals::services(
                otlp_grpc::signals::SignalsReceiver {
                    ingest: ingest.clone(),
                    config: config_rx.clone(),
                },
                max_decompressed,
            );
            let mut stop = stop_receivers.subscribe();
            let tls = tls.clone();
            receivers.push(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                // The HTTP/1 timeouts of `stormwatch_http` do not apply to HTTP/2: bound each
                // call's time instead, and drop connections whose peer stopped answering pings.
                let server = tonic::transport::Server::builder()
                    .timeout(stormwatch_http::BODY_READ_TIMEOUT)
                    .http2_keepalive_interval(Some(Duration::from_secs(30)))
                    .http2_keepalive_timeout(Some(Duration::from_secs(10)))
                    .max_concurrent_streams(Some(256))
                    .add_service(svc)
                    .add_service(metrics_svc)
                    .add_service(logs_svc);
                let served = match tls {
                    None => {
                        let incoming =
                            tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true));
                        server
                            .serve_with_incoming_shutdown(incoming, shutdown)
                            .await
                    }
                    Some(tls) => {
                        server
                            .serve_with_incoming_shutdown(tls_incoming(l, tls), shutdown)
                            .await
                    }
                };
                if let Err(error) = served {
                    tracing::error!(%error, "OTLP/gRPC server failed");
                }
            }));
        }
        drop(state);
        drop(ingest);
        let mut background = Vec::new();
        if let Some(l) = l_admin {
            background.push(serve_http(
                l,
                admin::router(metrics.clone()),
                None,
                stop_bg.subscribe(),
            ));
        }
        if let Some(tls) = tls {
            background.push(tokio::spawn(tls.watch(stormwatch_http::tls::RELOAD_EVERY)));
        }

        let pipeline = Pipeline {
            rx,
            hosts_rx,
            probes_rx,
            config: config_rx.clone(),
            spool: spool.clone(),
            seq: seq.clone(),
            metrics: metrics.clone(),
            versions,
            signals,
        };
        let pipeline = tokio::spawn(pipeline.run(stop_pipeline.subscribe()));
        let shipper = Shipper::new(
            spool.clone(),
            config_rx.clone(),
            metrics.clone(),
            seq.clone(),
        )?;
        let shipper = tokio::spawn(shipper.run(stop_shipper.subscribe()));
        background.push(tokio::spawn(host::run(
            agent_host,
            config_rx.clone(),
            hosts_tx,
            stop_bg.subscribe(),
        )));
        background.push(tokio::spawn(probes::run(
            config_rx.clone(),
            probes_tx,
            stop_bg.subscribe(),
        )));
        background.push(tokio::spawn(reload::run(
            source.clone(),
            config_tx.clone(),
            metrics.clone(),
            stop_bg.subscribe(),
        )));
        let agent = Agent {
            otlp_http: otlp_http_addr,
            otlp_grpc: otlp_grpc_addr,
            zipkin: zipkin_addr,
            admin: admin_addr,
            metrics,
            spool,
            seq,
            config_tx,
            source,
            stop_receivers,
            stop_pipeline,
            stop_shipper,
            stop_bg,
            receivers,
            pipeline,
            shipper,
            background,
        };
        tracing::info!(
            otlp_http = ?agent.otlp_http, otlp_grpc = ?agent.otlp_grpc, zipkin = ?agent.zipkin, admin = ?agent.admin,
            instance = agent.seq.instance, "stormwatch-agent started"
        );
        Ok(agent)
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.config_tx.borrow().clone()
    }

    /// Reloads the config from its source (as SIGHUP does).
    pub fn reload(&self) -> Result<bool, crate::config::ConfigError> {
        reload::reload(&self.source, &self.config_tx, &self.metrics)
    }

    /// Stops in order within `grace` (plus at most [`PIPELINE_FLOOR`] when the pipeline is
    /// slow to write its last batch): receivers stop accepting and get up to half of `grace`
    /// for in-flight requests, then are aborted; background tasks (host metrics, probes,
    /// reload, admin) stop at once; the pipeline drains its queue into the spool; the shipper
    /// sends what it can until the deadline; whatever is left stays spooled.
    pub async fn shutdown(mut self, grace: Duration) {
        use tokio::time::{timeout_at, Instant};
        let started = Instant::now();
        let deadline = started + grace;
        tracing::info!(
            grace_s = grace.as_secs_f64(),
            "shutting down: receivers stop accepting"
        );
        let _ = self.stop_receivers.send(true);
        let _ = self.stop_bg.send(true);
        let receivers_until = started + grace / 2;
        for r in &mut self.receivers {
            if timeout_at(receivers_until, &mut *r).await.is_err() {
                r.abort();
            }
        }
        let _ = self.stop_pipeline.send(true);
        let pipeline_until = deadline.max(Instant::now() + PIPELINE_FLOOR);
        if timeout_at(pipeline_until, &mut self.pipeline)
            .await
            .is_err()
        {
            self.pipeline.abort();
            tracing::error!("pipeline did not write its last batch within the grace period");
        }
        let _ = self.stop_shipper.send(true);
        if timeout_at(deadline, &mut self.shipper).await.is_err() {
            self.shipper.abort();
        }
        // Background tasks were told to stop first; one stuck (say, in a blocking host sample)
        // is not waited for.
        let bg_until = Instant::now() + Duration::from_millis(100);
        for b in &mut self.background {
            if timeout_at(bg_until, &mut *b).await.is_err() {
                b.abort();
                tracing::warn!("a background task did not stop in time");
            }
        }
        let (batches, bytes) = self.spool.usage();
        if batches > 0 {
            tracing::warn!(
                batches,
                bytes,
                "batches left in the spool; they are sent on the next start"
            );
        }
        tracing::info!(took_ms = started.elapsed().as_millis() as u64, "stopped");
    }
}
