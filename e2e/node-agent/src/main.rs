//! `sluice-node-agent`: the node of Sluice's local cluster.

mod agent;
mod app;
mod claims;
mod cli;
mod context;
mod env;
mod error;
mod etc;
mod fields;
mod image;
mod ipam;
mod launch;
mod logs;
mod network;
mod node;
mod probe;
mod process;
mod refs;
mod status;
mod termination;
#[cfg(test)]
mod test_api;
mod volumes;
mod worker;

use clap::Parser;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // The causes on one line; never a backtrace, whatever RUST_BACKTRACE says.
            eprintln!("sluice-node-agent: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    match cli.command {
        // The launcher must stay single-threaded: setns and unshare act on the
        // calling thread, and exec replaces the whole process.
        cli::Command::Launch { spec } => match launch::launch(&spec)? {},
        cli::Command::Run(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .init();
            let runtime = tokio::runtime::Runtime::new()?;
            Ok(runtime.block_on(app::run(*args))?)
        }
    }
}
