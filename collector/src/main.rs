//! `stormwatch-collector`: parses flags and config, then hands over to the library.

use clap::Parser;
use stormwatch_collector::config::{Config, Flags};
use stormwatch_collector::Collector;

/// mimalloc instead of the C library's allocator: see ARCHITECTURE.md ("Dependencies").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    match stormwatch_http::raise_open_file_limit() {
        Ok(n) => tracing::debug!(open_files = n, "open-file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
    if flags.hash_password {
        std::process::exit(stormwatch_collector::config::print_password_hash());
    }
    let config = match Config::load(flags) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    // Installed before anything starts: a signal from here on stops the collector gracefully
    // (and its embedded PostgreSQL with it).
    let signals = stormwatch_http::shutdown_signals();
    let collector = match Collector::start(config).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("could not start: {e:#}");
            std::process::exit(1);
        }
    };
    if let Err(e) = collector.serve(signals).await {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
}
