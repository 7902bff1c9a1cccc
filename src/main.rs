//! The `dromos` binary: parse the command line, set up logging, run.

use clap::Parser;
use dromos::config::{Cli, Command, Config};
use std::time::Duration;

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Supervise(a) => {
            dromos::agent::supervisor::run(a.sandbox, Duration::from_millis(a.grace_ms), a.command)
        }
        Command::Serve(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("DROMOS_LOG").unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            let config = match Config::resolve(args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("dromos: {e}");
                    std::process::exit(2);
                }
            };
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("dromos: cannot start the runtime: {e}");
                    std::process::exit(1);
                }
            };
            if let Err(e) = rt.block_on(dromos::server::run(config)) {
                eprintln!("dromos: {e}");
                std::process::exit(1);
            }
        }
    }
}
