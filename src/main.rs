//! The `dromos` binary: parse the command line, set up logging, run.

use clap::Parser;
use dromos::config::{AgentSettings, Cli, Command, Config};
use std::time::Duration;

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Supervise(a) => dromos::agent::supervisor::run(dromos::agent::supervisor::Supervise {
            sandbox: a.sandbox,
            grace: Duration::from_millis(a.grace_ms),
            cgroups: a.cgroup,
            argv: a.command,
        }),
        Command::Serve(args) => {
            let config = Config::resolve(*args).unwrap_or_else(|e| exit(2, &e.to_string()));
            run(dromos::server::run(config));
        }
        Command::Haproxy(args) => {
            let config = args.resolve().unwrap_or_else(|e| exit(2, &e.to_string()));
            run(async move { dromos::proxy::sidecar::run(config).await.map_err(Into::into) });
        }
        Command::Agent(args) => {
            let settings = AgentSettings::resolve(args).unwrap_or_else(|e| exit(2, &e.to_string()));
            run(dromos::server::run_agent(settings));
        }
    }
}

fn exit(code: i32, msg: &str) -> ! {
    eprintln!("dromos: {msg}");
    std::process::exit(code)
}

/// Sets up logging and runs `main` on a multi-threaded runtime; exits 1 on error.
fn run(main: impl std::future::Future<Output = dromos::server::boxed::Result<()>>) {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("DROMOS_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| exit(1, &format!("cannot start the runtime: {e}")));
    if let Err(e) = rt.block_on(main) {
        exit(1, &e.to_string());
    }
}
