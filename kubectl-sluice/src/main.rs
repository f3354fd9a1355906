//! `kubectl-sluice`, run by kubectl as `kubectl sluice ...`: the command line
//! only; every command lives in the `kubectl_sluice` library.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use kubectl_sluice::commands::{self, Command as Manual};
use kubectl_sluice::connect::{ConnectOptions, Target};
use kubectl_sluice::history::HistoryView;
use kubectl_sluice::predict::{self, PredictOptions};
use kubectl_sluice::profile::{self, ProfileOptions};
use kubectl_sluice::{Output, cluster, status, to_json};

/// Sluice's InferenceServices from kubectl: rollout status and history, manual
/// rollout commands, predictions and drift profiles.
#[derive(Debug, Parser)]
#[command(name = "kubectl-sluice", bin_name = "kubectl sluice", version)]
struct Cli {
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config,
    /// else the in-cluster service account).
    #[arg(long, global = true, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true)]
    context: Option<String>,
    /// Namespace of the InferenceService (default: the context's, else `default`).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// Output format: aligned text, or JSON for scripts (docs/kubectl-plugin.md).
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Revisions and their traffic, the rollout and each analysis check, the
    /// autoscaler's signal, the Ready condition, a rollback in force.
    Status {
        /// The InferenceService.
        name: String,
    },
    /// Finished rollouts (status.history), oldest first.
    History {
        /// The InferenceService.
        name: String,
    },
    /// Promote the rollout in progress now, skipping the remaining analysis.
    Promote(ManualArgs),
    /// Stop the rollout in progress; the stable revision serves alone.
    Abort(ManualArgs),
    /// Hold the rollout at its current step.
    Pause(ManualArgs),
    /// Continue a paused rollout; the current step starts over.
    Resume(ManualArgs),
    /// Serve the previous stable revision again, without writing the spec
    /// (held in status.rollback until the spec changes).
    Rollback(ManualArgs),
    /// Send one Open Inference Protocol request through the API server's
    /// service proxy (POST /v2/models/<model>/infer) and print the outputs.
    ///
    /// Without --input, a sample request is built from the model's metadata:
    /// every input filled with zeros, -1 dimensions set to 1. The caller needs
    /// `get` and `create` on `services/proxy` in the namespace.
    Predict(PredictArgs),
    /// Write a drift-monitoring reference profile of the model the
    /// InferenceService serves, with a local `sluice-server profile`.
    ///
    /// The model is the one in force (status.rollback during a rollback, else
    /// spec.model; --revision picks one from status). It is downloaded on this
    /// machine with `sluice-server fetch` (its sha256 checked), so its URI must
    /// be reachable from here: https://, http://, s3:// (with this machine's
    /// AWS_* credentials; the InferenceService's credentialsSecret is not read)
    /// or a file:// path that exists here. For pvc:// or a path that exists only
    /// on the nodes, copy the file here and pass --model-file. The data and
    /// output flags are passed to `sluice-server profile` (docs/monitoring.md).
    Profile(ProfileArgs),
}

#[derive(Debug, Args)]
struct ManualArgs {
    /// The InferenceService.
    name: String,
    /// Wait until the operator has acted on the command, then print the rollout.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits (e.g. 30s, 2m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    timeout: Duration,
}

#[derive(Debug, Args)]
struct PredictArgs {
    /// The InferenceService.
    name: String,
    /// An OIP request body (JSON) to send as it is; `-` reads standard input.
    #[arg(long, value_name = "FILE|-")]
    input: Option<String>,
    /// The model name in the URL (default: the InferenceService's name, under
    /// which the operator serves it).
    #[arg(long)]
    model: Option<String>,
    /// An API key, sent as `x-api-key` (with spec.security.apiKeysSecret).
    #[arg(long, env = "SLUICE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Limit on each request (e.g. 30s).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
}

#[derive(Debug, Args)]
struct ProfileArgs {
    /// The InferenceService.
    name: String,
    /// Training data: CSV with a header row, or a 2-D NumPy .npy array.
    #[arg(long, value_name = "FILE")]
    data: PathBuf,
    /// Where to write the profile (JSON); `sluice-server profile --output`
    /// (renamed here, since `-o/--output` is the output format, as in kubectl).
    #[arg(long, value_name = "FILE")]
    output_file: PathBuf,
    /// CSV column holding the true label or value (excluded from the features).
    #[arg(long)]
    label_column: Option<String>,
    /// Features whose values are category codes.
    #[arg(long, value_delimiter = ',')]
    categorical: Vec<String>,
    /// Most values kept per numeric column (sluice-server's default: 10000).
    #[arg(long)]
    sample_size: Option<usize>,
    /// Profile this revision's model (from status.rollout, status.rollback or
    /// status.history) instead of the one in force.
    #[arg(long)]
    revision: Option<String>,
    /// Use this local copy of the model instead of downloading its URI.
    #[arg(long, value_name = "FILE")]
    model_file: Option<PathBuf>,
    /// The sluice-server binary (default: sluice-server on PATH).
    #[arg(long, env = "SLUICE_SERVER_BIN", value_name = "FILE")]
    server_bin: Option<PathBuf>,
}

/// `30`, `30s`, `500ms`, `2m` or `1h`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 30s or 2m"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: the unit must be ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// Prints the result, or `error: ...` (the causes after colons, no backtrace)
/// and exits 1, as kubectl does.
#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command and returns what it prints.
async fn run(cli: Cli) -> anyhow::Result<String> {
    let output = match cli.output {
        Format::Table => Output::Table,
        Format::Json => Output::Json,
    };
    let connect = ConnectOptions {
        kubeconfig: cli.kubeconfig,
        context: cli.context,
        namespace: cli.namespace,
    };
    let target = connect
        .connect()
        .await
        .context("connecting to the cluster")?;
    let text = match cli.command {
        Command::Status { name } => {
            let view = status::load(&target, &name).await?;
            match output {
                Output::Table => view.render(),
                Output::Json => to_json(&view)?,
            }
        }
        Command::History { name } => {
            let view = HistoryView::new(&cluster::inference_service(&target, &name).await?);
            match output {
                Output::Table => view.render(),
                Output::Json => to_json(&view)?,
            }
        }
        Command::Promote(args) => manual(&target, Manual::Promote, args, output).await?,
        Command::Abort(args) => manual(&target, Manual::Abort, args, output).await?,
        Command::Pause(args) => manual(&target, Manual::Pause, args, output).await?,
        Command::Resume(args) => manual(&target, Manual::Resume, args, output).await?,
        Command::Rollback(args) => manual(&target, Manual::Rollback, args, output).await?,
        Command::Predict(args) => {
            let body = match args.input.as_deref() {
                None => None,
                Some("-") => {
                    let mut body = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut body)
                        .context("reading the request from standard input")?;
                    Some(body)
                }
                Some(path) => Some(std::fs::read(path).with_context(|| format!("reading {path}"))?),
            };
            let options = PredictOptions {
                model: args.model,
                body,
                api_key: args.api_key,
                timeout: args.timeout,
            };
            let prediction = predict::predict(&target, &args.name, &options).await?;
            match output {
                Output::Table => prediction.render()?,
                Output::Json => to_json(&prediction.response)?,
            }
        }
        Command::Profile(args) => {
            let isvc = cluster::inference_service(&target, &args.name).await?;
            let choice = profile::choose_model(&isvc, args.revision.as_deref())?;
            let location = profile::locate(&choice, args.model_file.as_deref())?;
            let server = profile::server_binary(args.server_bin.as_deref())?;
            if let Some(note) = profile::credentials_note(&choice, &location) {
                eprintln!("note: {note}");
            }
            let options = ProfileOptions {
                data: args.data,
                output: args.output_file,
                label_column: args.label_column,
                categorical: args.categorical,
                sample_size: args.sample_size,
            };
            let report = tokio::task::spawn_blocking(move || {
                profile::run(
                    &server,
                    &args.name,
                    &target.namespace,
                    &choice,
                    &location,
                    &options,
                )
            })
            .await??;
            match output {
                Output::Table => report.render(),
                Output::Json => to_json(&report)?,
            }
        }
    };
    Ok(text)
}

async fn manual(
    target: &Target,
    command: Manual,
    args: ManualArgs,
    output: Output,
) -> anyhow::Result<String> {
    let wait = args.wait.then_some(args.timeout);
    let view = commands::run(target, &args.name, command, wait).await?;
    Ok(match output {
        Output::Table => view.render(),
        Output::Json => to_json(&view)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_read_like_kubectl_timeouts() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn flags_go_after_the_command_as_kubectl_passes_them() {
        let cli = Cli::try_parse_from([
            "kubectl-sluice",
            "profile",
            "fraud",
            "-n",
            "ml",
            "-o",
            "json",
            "--data",
            "train.csv",
            "--output-file",
            "profile.json",
            "--categorical",
            "a,b",
        ])
        .unwrap();
        assert_eq!(cli.namespace.as_deref(), Some("ml"));
        assert!(matches!(cli.output, Format::Json));
        let Command::Profile(args) = cli.command else {
            panic!("not profile")
        };
        assert_eq!(args.categorical, ["a", "b"]);
        assert_eq!(args.output_file, PathBuf::from("profile.json"));
    }
}
