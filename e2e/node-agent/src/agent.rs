//! The agent loop: watches the pods bound to this node and hands each to its worker.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::context::NodeContext;
use crate::worker::{self, Message};

/// Runs pods bound to this node until `shutdown` resolves, then stops them all.
pub async fn run(ctx: Arc<NodeContext>, shutdown: impl std::future::Future<Output = ()>) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node_name));
    let mut events = watcher::watcher(pods, config).boxed();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut workers: BTreeMap<String, mpsc::UnboundedSender<Message>> = BTreeMap::new();
    // UIDs whose worker has finished: later events for them start nothing.
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut relisted: Option<BTreeSet<String>> = None;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(uid) = done_rx.recv() => {
                workers.remove(&uid);
                finished.insert(uid);
            }
            event = events.next() => match event {
                Some(Ok(Event::Init)) => relisted = Some(BTreeSet::new()),
                Some(Ok(Event::InitApply(pod))) => {
                    if let Some(seen) = relisted.as_mut() {
                        seen.insert(pod.uid().unwrap_or_default());
                    }
                    dispatch(&ctx, &mut workers, &finished, &done_tx, pod);
                }
                Some(Ok(Event::InitDone)) => {
                    let seen = relisted.take().unwrap_or_default();
                    for (uid, tx) in &workers {
                        if !seen.contains(uid) {
                            let _ = tx.send(Message::Gone);
                        }
                    }
                }
                Some(Ok(Event::Apply(pod))) => dispatch(&ctx, &mut workers, &finished, &done_tx, pod),
                Some(Ok(Event::Delete(pod))) => {
                    if let Some(tx) = workers.get(&pod.uid().unwrap_or_default()) {
                        let _ = tx.send(Message::Gone);
                    }
                }
                Some(Err(e)) => warn!(error = %e, "pod watch failed; retrying"),
                None => break,
            },
        }
    }
    info!(pods = workers.len(), "stopping all pods");
    for tx in workers.values() {
        let _ = tx.send(Message::Shutdown);
    }
    while !workers.is_empty() {
        match done_rx.recv().await {
            Some(uid) => {
                workers.remove(&uid);
            }
            None => break,
        }
    }
}

fn dispatch(
    ctx: &Arc<NodeContext>,
    workers: &mut BTreeMap<String, mpsc::UnboundedSender<Message>>,
    finished: &BTreeSet<String>,
    done: &mpsc::UnboundedSender<String>,
    pod: Pod,
) {
    let uid = pod.uid().unwrap_or_default();
    if let Some(tx) = workers.get(&uid) {
        let _ = tx.send(Message::Update(Box::new(pod)));
        return;
    }
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default();
    let terminal =
        matches!(phase, "Succeeded" | "Failed") && pod.metadata.deletion_timestamp.is_none();
    if finished.contains(&uid) || terminal {
        return;
    }
    let tx = worker::start(ctx.clone(), pod, done.clone());
    workers.insert(uid, tx);
}
