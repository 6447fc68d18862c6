//! Command-line interface. The subcommands and their flags are a contract
//! with operators' tooling (see README "Command line"): extend, never break.

mod check_config;
pub mod evaluate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "misp-guard-gw",
    version,
    about = "Transparent MISP sync filtering gateway (misp-guard policy)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file and summarise it (exit 1 with the error if invalid).
    CheckConfig {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Decide flows offline: one JSON flow per line in, one verdict per line out.
    Evaluate {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// JSON-lines flows file; standard input when absent.
        #[arg(value_name = "FLOWS.jsonl")]
        flows: Option<PathBuf>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::CheckConfig { config } => check_config::run(&config),
        Command::Evaluate { config, flows } => evaluate::run(&config, flows.as_deref()),
    }
}

/// Logs go to standard error (journald picks them up under systemd);
/// `RUST_LOG` overrides the default `info` level.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
