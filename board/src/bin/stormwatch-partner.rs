//! `stormwatch-partner`: parses flags, starts the partner, prints the ready line, stops on
//! SIGINT/SIGTERM after exporting the last spans.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use stormwatch_board::{init_logs, shutdown_signal, start_partner, PartnerArgs};

#[tokio::main]
async fn main() -> ExitCode {
    let args = PartnerArgs::parse();
    init_logs();
    let running = match start_partner(&args).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stormwatch-partner: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    println!("partner listening on {}", running.addr());
    let _ = std::io::stdout().flush();
    shutdown_signal().await;
    tracing::info!("stopping");
    running.stop().await;
    ExitCode::SUCCESS
}
