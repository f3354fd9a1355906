//! `sluice-operator`: reconciles InferenceServices in every namespace of the cluster
//! that `KUBECONFIG` (or the in-cluster service account) names, or only in those
//! that `--watch-namespaces` lists.

use std::process::ExitCode;

use clap::Parser;
use sluice_operator::config::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    sluice_operator::telemetry::init(cli.log_format);
    match sluice_operator::run::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The causes on one line; never a backtrace, whatever RUST_BACKTRACE says.
            tracing::error!("sluice-operator: {error:#}");
            ExitCode::FAILURE
        }
    }
}
