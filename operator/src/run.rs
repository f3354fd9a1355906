//! The operator process: endpoints, leader election, the controller and a graceful
//! shutdown on SIGTERM or Ctrl-C.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::Cli;
use crate::controller;
use crate::http::{self, Health};
use crate::leader::LeaseLock;
use crate::metrics::Metrics;
use crate::reconcile::Context;

const LEASE_DURATION: Duration = Duration::from_secs(15);
const RENEW_EVERY: Duration = Duration::from_secs(5);
const RETRY_EVERY: Duration = Duration::from_secs(2);

/// Runs the operator until a termination signal (returns `Ok`) or until it loses
/// the leader Lease (returns an error, so the process restarts as a standby).
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let scope = cli.watch_scope()?;
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API (KUBECONFIG or in-cluster config)")?;
    let metrics = Metrics::default();
    let ready = Arc::new(AtomicBool::new(false));
    let health = Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let addr = cli.metrics_addr;
    tokio::spawn(async move {
        if let Err(e) = http::serve(addr, health).await {
            error!(%e, %addr, "metrics and health endpoints failed");
        }
    });
    info!(
        server_image = %cli.server_image,
        prometheus_url = cli.prometheus_url.as_deref().unwrap_or("(none)"),
        %addr,
        namespaces = ?scope,
        "sluice-operator starting"
    );

    // `stop` turns true on SIGTERM/Ctrl-C; `lost` when leadership is lost.
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("termination signal received; finishing in-flight reconciles");
        let _ = stop_tx.send(true);
    });

    let identity = cli.identity.clone().unwrap_or_else(default_identity);
    let lock = if cli.leader_elect {
        let namespace = cli
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let lock = LeaseLock::new(
            client.clone(),
            &namespace,
            &cli.lease_name,
            &identity,
            LEASE_DURATION,
        );
        info!(lease = %cli.lease_name, %namespace, %identity, "waiting for leadership");
        loop {
            match lock.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => ready.store(true, Ordering::Relaxed),
                Err(e) => warn!(%e, "leader election attempt failed"),
            }
            if wait_or_stop(stop.clone(), RETRY_EVERY).await {
                return Ok(());
            }
        }
        info!(%identity, "acquired leadership");
        Some(Arc::new(lock))
    } else {
        None
    };
    metrics.leader.set(1);
    ready.store(true, Ordering::Relaxed);

    let (lost_tx, lost) = watch::channel(false);
    if let Some(lock) = lock.clone() {
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let mut last_renewal = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(RENEW_EVERY) => {}
                    _ = stop.changed() => return,
                }
                match lock.try_acquire_or_renew().await {
                    Ok(true) => last_renewal = tokio::time::Instant::now(),
                    Ok(false) => break,
                    Err(e) if last_renewal.elapsed() < LEASE_DURATION - RENEW_EVERY => {
                        warn!(%e, "lease renewal failed; retrying")
                    }
                    Err(e) => {
                        warn!(%e, "lease renewal failed for too long");
                        break;
                    }
                }
            }
            let _ = lost_tx.send(true);
        });
    }

    let reporter = Reporter {
        controller: "sluice-operator".into(),
        instance: Some(identity),
    };
    if cli.prometheus_url.is_none() {
        warn!(
            "no Prometheus URL (--prometheus-url or PROMETHEUS_URL): rollouts will hold at their first analysis and never promote on their own, and the autoscaler will keep every InferenceService at minReplicas; each InferenceService's MetricsAvailable condition says so too"
        );
    }
    let ctx = Arc::new(Context {
        client: client.clone(),
        config: cli.build_config(),
        recorder: Recorder::new(client, reporter.clone()),
        reporter,
        metrics: metrics.clone(),
        prometheus: cli
            .prometheus_url
            .as_deref()
            .map(crate::prometheus::client)
            .transpose()
            .context("--prometheus-url")?,
        scope,
    });
    let (stop_c, lost_c) = (stop.clone(), lost.clone());
    let shutdown = async move {
        tokio::select! {
            _ = changed_to_true(stop_c) => {}
            _ = changed_to_true(lost_c) => {}
        }
    };
    controller::run(ctx, shutdown).await;
    metrics.leader.set(0);
    if *lost.borrow() {
        anyhow::bail!("lost the leader Lease; exiting so that a standby takes over");
    }
    if let Some(lock) = lock
        && let Err(e) = lock.release().await
    {
        warn!(%e, "could not release the leader Lease");
    }
    info!("sluice-operator stopped");
    Ok(())
}

async fn changed_to_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Sleeps for `delay`; returns true if `stop` turned true meanwhile.
async fn wait_or_stop(stop: watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = changed_to_true(stop) => true,
    }
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "sluice-operator".into());
    format!("{host}-{}", std::process::id())
}
