//! `stormwatch-board`: parses flags, starts the board, prints the ready line, stops on
//! SIGINT/SIGTERM after exporting the last spans.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use stormwatch_board::{init_logs, shutdown_signal, start_board, BoardArgs};

#[tokio::main]
async fn main() -> ExitCode {
    let args = BoardArgs::parse();
    init_logs();
    let running = match start_board(&args).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stormwatch-board: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    println!("board listening on {}", running.addr());
    let _ = std::io::stdout().flush();
    shutdown_signal().await;
    tracing::info!("stopping");
    running.stop().await;
    ExitCode::SUCCESS
}
