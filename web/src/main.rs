//! `stormwatch-web`: the dashboard on its own, against a read replica of the store.

use clap::Parser;
use stormwatch_web::standalone::{access, serve, Flags};

/// Exit code for unusable configuration (EX_USAGE).
const EXIT_CONFIG: i32 = 64;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STORMWATCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let flags = Flags::parse();
    let auth = match access(&flags) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("{e}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    match stormwatch_http::raise_open_file_limit() {
        Ok(n) => tracing::debug!(open_files = n, "open-file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
    // SIGINT or SIGTERM: finish in-flight requests, then exit.
    let shutdown = stormwatch_http::shutdown_signals();
    if let Err(e) = serve(flags, auth, shutdown).await {
        tracing::error!("{e}");
        std::process::exit(1);
    }
}
