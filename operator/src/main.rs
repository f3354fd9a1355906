//! `sluice-operator`: reconciles InferenceServices in every namespace of the cluster
//! that `KUBECONFIG` (or the in-cluster service account) names.

use clap::Parser;
use sluice_operator::config::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    sluice_operator::telemetry::init(cli.log_format);
    sluice_operator::run::run(cli).await
}
