//! Hardened HTTP serving, shared by the collector, the stand-alone dashboard and the agent's
//! receivers: what `axum::serve` leaves out for a server that faces careless or hostile clients.
//!
//! - **Header read timeout**: a client must send a request's headers within
//!   [`Limits::header_read_timeout`]; a slowloris that trickles them holds its connection no
//!   longer (hyper's HTTP/1 timer; HTTP/2 multiplexes streams on one connection instead).
//! - **Body read timeout**: a whole request body must arrive within
//!   [`Limits::body_read_timeout`] of the handler's first read; a body that stalls or trickles
//!   fails the read (handlers answer 400) and the connection closes.
//! - **Connection cap**: at most [`Limits::max_connections`] open at once; more wait in the
//!   kernel's accept backlog rather than costing memory and file descriptors here.
//! - **Open-file limit**: [`raise_open_file_limit`] lifts the soft limit to the hard one at
//!   start (a soft limit of 1,024 was exhausted by 1,100 trickling connections, after which
//!   no one was served).
//! - **HTTPS** ([`tls`]): certificate files reloaded when they change, optional client
//!   certificates, the handshake bounded by the header read timeout.
//! - **Graceful shutdown with a grace limit**: in-flight requests finish, connections still
//!   open after [`Limits::shutdown_grace`] are dropped.
//!
//! Written here because no crate composes these for axum; it uses hyper-util's connection
//! builder and graceful shutdown, as `axum::serve` does inside.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub mod tls;

/// Default for [`Limits::header_read_timeout`].
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`Limits::body_read_timeout`]: a 16 MiB batch at 300 kB/s.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Default for [`Limits::max_connections`].
pub const MAX_CONNECTIONS: usize = 10_000;
/// Default for [`Limits::shutdown_grace`].
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// What one server allows its clients.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Time to receive a request's headers, from the first byte of the request.
    pub header_read_timeout: Duration,
    /// Time to receive a whole request body, from the handler's first read of it.
    pub body_read_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests before dropping their connections.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            body_read_timeout: BODY_READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            shutdown_grace: SHUTDOWN_GRACE,
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit; returns the limit now
/// in force. A server that runs out of descriptors can accept no one, however idle the
/// connections holding them.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Installs the SIGINT and SIGTERM handlers now and returns what completes on either: every
/// binary's shutdown trigger. Call it before starting anything: until a handler is installed,
/// a signal kills the process outright (the default action), losing what it held in memory.
pub fn shutdown_signals() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let int = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    async move {
        let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(int) => {},
            _ = wait(term) => {},
        }
        tracing::info!("shutting down: finishing in-flight requests");
    }
}

/// Completes on SIGINT or SIGTERM (handlers installed when first polled; see
/// [`shutdown_signals`] to install them at once).
pub async fn shutdown_signal() {
    shutdown_signals().await
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes; requests see
/// the peer's address as `ConnectInfo<SocketAddr>`. Returns once every connection has
/// finished, or the grace period ran out.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    serve_with(listener, router, limits, None, shutdown).await
}

/// [`serve`], over TLS when `tls` is given: the handshake must complete within the header
/// read timeout, and is done on the connection's own task (a slow handshake holds no one
/// else up).
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<Arc<tls::Tls>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // Out of descriptors or a connection reset before accept: not fatal. Wait
                    // a little so a full descriptor table does not spin the loop.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Without TCP_NODELAY a small response after a large request body can wait for the
        // peer's delayed ACK (Nagle), capping throughput per connection.
        let _ = stream.set_nodelay(true);
        let timeout = limits.body_read_timeout;
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let req = req.map(|body| axum::body::Body::new(Deadline::new(body, timeout)));
                tower::ServiceExt::oneshot(router.clone(), req)
            });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.as_ref().map(|t| t.acceptor());
        let handshake_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let result = match tls {
                None => {
                    let c = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(c.into_owned()).await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let c = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service);
                            watcher.watch(c.into_owned()).await
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%error, %peer, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_s = limits.shutdown_grace.as_secs(),
            "connections still open after the shutdown grace period; dropped"
        );
    }
}

pin_project_lite::pin_project! {
    /// A request body that fails once `timeout` has passed since its first poll.
    struct Deadline<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: Option<tokio::time::Sleep>,
        timeout: Duration,
    }
}

impl<B> Deadline<B> {
    fn new(inner: B, timeout: Duration) -> Self {
        Deadline {
            inner,
            sleep: None,
            timeout,
        }
    }
}

/// The error of a body that did not arrive in time.
#[derive(Debug)]
pub struct BodyTimeout(Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {} s",
            self.0.as_secs()
        )
    }
}

impl std::error::Error for BodyTimeout {}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<B> http_body::Body for Deadline<B>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if this.sleep.is_none() {
            this.sleep.set(Some(tokio::time::sleep(*this.timeout)));
        }
        if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
            if sleep.poll(cx).is_ready() {
                return Poll::Ready(Some(Err(Box::new(BodyTimeout(*this.timeout)))));
            }
        }
        this.inner.poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
