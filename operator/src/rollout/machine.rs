//! The rollout state machine: a pure function from the spec, the rollout kept in
//! status, the ready pods per revision, an analysis result and a manual command to
//! the next rollout status and the actions (replicas per revision, which revision
//! the Service selects, route weights, history entries, Events).
//!
//! Everything it remembers lives in [`RolloutStatus`], written to `status.rollout`
//! after each reconcile, so an operator restarted mid-rollout resumes at the same
//! step with the same counters and clocks.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::analysis::Analysis;
use super::control::Command;
use super::traffic;
use crate::crd::rollout::{
    CheckVerdict, HistoryEntry, RolloutPhase, RolloutSpec, RolloutStatus, Strategy,
};
use crate::crd::{ModelSpec, RuntimeSpec};

/// Blue-green step: the new revision runs at full size without production traffic.
pub const BG_PREVIEW: u32 = 0;
/// Blue-green step: production traffic switched to the new revision, still analysed.
pub const BG_POST_PROMOTION: u32 = 1;
/// Blue-green step: promoted; the old revision keeps its pods for the scale-down delay.
pub const BG_SCALE_DOWN: u32 = 2;

/// Everything the machine decides from.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// `spec.rollout`, defaults applied.
    pub spec: &'a RolloutSpec,
    /// Revision of the current spec.
    pub desired: &'a str,
    /// Model of the current spec (for history).
    pub model: &'a ModelSpec,
    /// Runtime of the current spec (for history).
    pub runtime: &'a RuntimeSpec,
    /// Serving pods needed in total (the autoscaler's decision, [`crate::autoscale`]).
    pub total: i32,
    /// Whether traffic is split by an HTTPRoute rather than by replica ratio.
    pub routed: bool,
    /// Whether the revisions are stream workers of one consumer group
    /// (`spec.streaming`): a canary's workers then replace stable ones, so that
    /// the group keeps the autoscaler's size (which the partitions cap) and the
    /// canary's share of the members is the step's weight.
    pub streaming: bool,
    /// `status.rollout`.
    pub previous: Option<&'a RolloutStatus>,
    /// `status.stableRevision`.
    pub stable: Option<&'a str>,
    /// `status.history`.
    pub history: &'a [HistoryEntry],
    /// Ready pods per revision.
    pub ready: &'a BTreeMap<String, i32>,
    /// Why the desired revision can never serve, when that is known (its
    /// optimized model failed the agreement check): its rollout then ends
    /// `RolledBack` at once instead of at the progress deadline.
    pub unservable: Option<&'a str>,
    /// The analysis run for this reconcile, when [`analysis_due`] asked for one.
    pub analysis: Option<&'a Analysis>,
    /// A manual command from the annotation.
    pub command: Option<Command>,
    /// The time of this decision.
    pub now: Timestamp,
}

/// A human-readable note that becomes an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Warning rather than Normal.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// The message.
    pub message: String,
}

/// What the machine decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Next `status.rollout`.
    pub rollout: Option<RolloutStatus>,
    /// Next `status.stableRevision`.
    pub stable: Option<String>,
    /// Pods per revision; revisions not listed have no pods.
    pub replicas: BTreeMap<String, i32>,
    /// The only revision the InferenceService's Service selects (blue-green); all
    /// revisions when absent (replica-ratio splitting).
    pub active: Option<String>,
    /// Share of traffic, in percent, on the new revision while a rollout runs.
    pub canary_weight: Option<i32>,
    /// HTTPRoute weights per revision (used when the spec names a route).
    pub route_weights: Vec<(String, i32)>,
    /// Next `status.history`.
    pub history: Vec<HistoryEntry>,
    /// Events to publish.
    pub notes: Vec<Note>,
    /// When to look again.
    pub requeue: Duration,
}

/// Whether an analysis of the rollout in `previous` is due now; the caller runs it
/// and passes the result in [`Input::analysis`].
pub fn analysis_due(
    spec: &RolloutSpec,
    previous: Option<&RolloutStatus>,
    desired: &str,
    now: Timestamp,
) -> bool {
    let Some(state) = previous else { return false };
    state.revision == desired
        && state.phase == RolloutPhase::Progressing
        && state.stable.is_some()
        && analysing_step(spec, state)
        && next_analysis(spec, state).is_some_and(|at| now >= at)
}

/// Decides the next state and actions. Pure: same input, same decision.
pub fn decide(i: &Input) -> Decision {
    let mut run = Run {
        i,
        notes: Vec::new(),
        history: i.history.to_vec(),
        stable: i.stable.map(String::from),
    };
    let state = run.current();
    let state = state.map(|s| run.command(s));
    let state = state.map(|s| run.advance(s));
    run.finish_decision(state)
}

struct Run<'a, 'b> {
    i: &'a Input<'b>,
    notes: Vec<Note>,
    history: Vec<HistoryEntry>,
    stable: Option<String>,
}

impl Run<'_, '_> {
    fn note(&mut self, warning: bool, reason: &'static str, message: String) {
        self.notes.push(Note {
            warning,
            reason,
            message,
        });
    }

    fn now(&self) -> Time {
        Time(self.i.now)
    }

    fn ready(&self, revision: &str) -> i32 {
        self.i.ready.get(revision).copied().unwrap_or(0)
    }

    /// The rollout that applies to the desired revision: the one in status, or a new
    /// one; a rollout of another revision still running is aborted as superseded.
    fn current(&mut self) -> Option<RolloutStatus> {
        let desired = self.i.desired;
        let mut last = self.i.previous.cloned();
        if let Some(previous) = &mut last {
            if previous.revision == desired {
                return last;
            }
            if !previous.phase.finished() {
                self.end(
                    previous,
                    RolloutPhase::Aborted,
                    format!("superseded by revision {desired}"),
                );
            }
        }
        if self.stable.as_deref() == Some(desired) {
            // Back at the stable revision: nothing to roll out.
            return last;
        }
        let stable = self.stable.clone();
        let strategy = self.i.spec.strategy;
        let message = match &stable {
            Some(s) => format!("{strategy:?} rollout of revision {desired} replacing {s}"),
            None => format!("first revision {desired}"),
        };
        self.note(false, "RolloutStarted", message.clone());
        Some(RolloutStatus {
            revision: desired.to_string(),
            stable,
            strategy,
            phase: RolloutPhase::Progressing,
            step: 0,
            step_started: None,
            step_entered: self.now(),
            last_analysis: None,
            failures: 0,
            no_data: 0,
            checks: Vec::new(),
            message,
            model: self.i.model.into(),
            runtime: (self.i.runtime != &RuntimeSpec::default()).then(|| self.i.runtime.clone()),
        })
    }

    /// Applies a manual command to a running rollout.
    fn command(&mut self, mut s: RolloutStatus) -> RolloutStatus {
        let Some(command) = self.i.command else {
            return s;
        };
        if s.phase.finished() || s.stable.is_none() {
            self.note(
                true,
                "CommandIgnored",
                format!("{command} ignored: no rollout is in progress"),
            );
            return s;
        }
        match (command, s.phase) {
            (Command::Pause, RolloutPhase::Progressing) => {
                s.phase = RolloutPhase::Paused;
                s.message = format!("paused at step {} by annotation", s.step);
                self.note(false, "Paused", s.message.clone());
            }
            (Command::Resume, RolloutPhase::Paused) => {
                s.phase = RolloutPhase::Progressing;
                let step = s.step;
                self.enter_step(&mut s, step);
                s.message = format!("resumed at step {}", s.step);
                self.note(false, "Resumed", s.message.clone());
            }
            (Command::Abort, _) => {
                self.end(
                    &mut s,
                    RolloutPhase::Aborted,
                    "aborted by annotation".into(),
                );
            }
            (Command::Promote, _) => {
                s.phase = RolloutPhase::Progressing;
                let step = match s.strategy {
                    Strategy::Canary => self.i.spec.canary.steps.len() as u32,
                    Strategy::BlueGreen => BG_SCALE_DOWN,
                };
                self.enter_step(&mut s, step);
                s.message = "promotion forced by annotation, analysis skipped".into();
                self.note(false, "PromotionForced", s.message.clone());
            }
            (command, phase) => self.note(
                true,
                "CommandIgnored",
                format!("{command} ignored: the rollout is {phase:?}"),
            ),
        }
        s
    }

    fn enter_step(&self, s: &mut RolloutStatus, step: u32) {
        s.step = step;
        s.step_started = None;
        s.step_entered = self.now();
        s.last_analysis = None;
        s.failures = 0;
        s.no_data = 0;
    }

    /// Ends the rollout with `outcome` and records it in history.
    fn end(&mut self, s: &mut RolloutStatus, outcome: RolloutPhase, reason: String) {
        s.phase = outcome;
        s.message = reason.clone();
        let (warning, event) = match outcome {
            RolloutPhase::Promoted => {
                self.stable = Some(s.revision.clone());
                (false, "Promoted")
            }
            RolloutPhase::RolledBack => (true, "RolledBack"),
            _ => (true, "Aborted"),
        };
        self.note(
            warning,
            event,
            format!("revision {} {outcome:?}: {reason}", s.revision),
        );
        self.history.push(HistoryEntry {
            revision: s.revision.clone(),
            outcome,
            reason,
            time: self.now(),
            model: s.model.clone(),
            runtime: s.runtime.clone(),
        });
        let limit = self.i.spec.history_limit.max(1) as usize;
        if self.history.len() > limit {
            self.history.drain(..self.history.len() - limit);
        }
    }

    /// Moves a progressing rollout along: waits for pods, applies the analysis,
    /// advances steps, promotes or rolls back.
    fn advance(&mut self, mut s: RolloutStatus) -> RolloutStatus {
        if s.phase != RolloutPhase::Progressing {
            return s;
        }
        let total = self.i.total;
        let Some(_) = &s.stable else {
            // The first revision: ready at full size is stable.
            if self.ready(&s.revision) >= total {
                self.end(
                    &mut s,
                    RolloutPhase::Promoted,
                    "first revision ready".into(),
                );
            } else {
                s.message = format!(
                    "waiting for {} of {total} pods of revision {}",
                    total - self.ready(&s.revision),
                    s.revision
                );
            }
            return s;
        };
        if let Some(reason) = self.i.unservable.filter(|_| s.revision == self.i.desired) {
            let reason = format!("revision {} cannot serve: {reason}", s.revision);
            self.end(&mut s, RolloutPhase::RolledBack, reason);
            return s;
        }
        let wanted = new_replicas(self.i, &s, total);
        let ready = self.ready(&s.revision);
        if ready < wanted {
            s.step_started = None;
            let waited = self.i.now.duration_since(s.step_entered.0);
            let deadline = SignedDuration::from_secs(self.i.spec.progress_deadline_seconds.into());
            if waited > deadline {
                let reason = format!(
                    "{ready} of {wanted} pods of revision {} ready after {}s (progressDeadlineSeconds)",
                    s.revision,
                    waited.as_secs()
                );
                self.end(&mut s, RolloutPhase::RolledBack, reason);
            } else {
                s.message = format!(
                    "step {}: waiting for {} of {wanted} pods of revision {}",
                    s.step,
                    wanted - ready,
                    s.revision
                );
            }
            return s;
        }
        if s.step_started.is_none() {
            s.step_started = Some(self.now());
            s.message = format!("step {}: {wanted} pods ready", s.step);
        }
        if !analysing_step(self.i.spec, &s) {
            return self.finish_step(s);
        }
        let Some(analysis) = self.i.analysis else {
            return s;
        };
        s.last_analysis = Some(self.now());
        s.checks = analysis.checks.clone();
        let summary = analysis.summary();
        let a = &self.i.spec.analysis;
        match analysis.verdict {
            CheckVerdict::Pass => {
                s.failures = 0;
                s.no_data = 0;
                self.note(false, "AnalysisPassed", summary);
                if self.step_elapsed(&s) {
                    return self.finish_step(s);
                }
                s.message = format!("step {}: analysis passed", s.step);
            }
            CheckVerdict::Fail => {
                s.failures += 1;
                s.no_data = 0;
                self.note(true, "AnalysisFailed", summary.clone());
                if s.failures >= a.failure_limit {
                    let reason = format!(
                        "analysis failed {} times in a row: {}",
                        s.failures,
                        analysis.failing()
                    );
                    return self.fail(s, reason);
                }
                s.message = format!(
                    "step {}: analysis failed ({} of {} before rollback): {}",
                    s.step,
                    s.failures,
                    a.failure_limit,
                    analysis.failing()
                );
            }
            // An analysis is never Waiting as a whole (`analysis::evaluate`).
            CheckVerdict::NoData | CheckVerdict::Waiting => {
                s.no_data += 1;
                // Starvation is named apart: it has a cause (clients holding
                // connections to the stable pods) and a cure (rotation).
                let (event, held) = match analysis.starvation() {
                    Some(starved) => ("AnalysisStarved", format!("starved, {starved}")),
                    None => ("AnalysisNoData", "no data".to_string()),
                };
                self.note(true, event, summary);
                if s.no_data >= a.no_data_limit {
                    let reason = format!(
                        "{held} for {} analyses in a row: {}",
                        s.no_data,
                        analysis.failing()
                    );
                    return self.fail(s, reason);
                }
                s.message = format!(
                    "step {}: holding, {held} ({} of {}): {}",
                    s.step,
                    s.no_data,
                    a.no_data_limit,
                    analysis.failing()
                );
            }
            CheckVerdict::Error => {
                self.note(true, "AnalysisUnavailable", summary);
                s.message = format!(
                    "step {}: holding, Prometheus unavailable: {}",
                    s.step,
                    analysis.failing()
                );
            }
        }
        s
    }

    fn fail(&mut self, mut s: RolloutStatus, reason: String) -> RolloutStatus {
        if s.strategy == Strategy::BlueGreen && s.step == BG_POST_PROMOTION {
            self.note(
                true,
                "SwitchedBack",
                format!("traffic switched back to revision {}", stable_of(&s)),
            );
        }
        self.end(&mut s, RolloutPhase::RolledBack, reason);
        s
    }

    fn step_elapsed(&self, s: &RolloutStatus) -> bool {
        let seconds = match (s.strategy, s.step) {
            (Strategy::Canary, _) => self.i.spec.canary.step_seconds,
            (Strategy::BlueGreen, BG_PREVIEW) => self.i.spec.blue_green.preview_seconds,
            (Strategy::BlueGreen, BG_POST_PROMOTION) => {
                self.i.spec.blue_green.post_promotion_seconds
            }
            (Strategy::BlueGreen, _) => self.i.spec.blue_green.scale_down_delay_seconds,
        };
        s.step_started.as_ref().is_some_and(|started| {
            self.i.now.duration_since(started.0) >= SignedDuration::from_secs(seconds.into())
        })
    }

    /// The current step is done (its pods ready, its analysis passed when it has one).
    fn finish_step(&mut self, mut s: RolloutStatus) -> RolloutStatus {
        let steps = &self.i.spec.canary.steps;
        match s.strategy {
            Strategy::Canary if (s.step as usize) < steps.len() => {
                let next = s.step + 1;
                self.enter_step(&mut s, next);
                s.message = match steps.get(next as usize) {
                    Some(w) => format!("step {next}: {w}% of traffic to revision {}", s.revision),
                    None => format!("promoting revision {}: scaling to full size", s.revision),
                };
                self.note(false, "StepAdvanced", s.message.clone());
            }
            Strategy::Canary => {
                self.end(
                    &mut s,
                    RolloutPhase::Promoted,
                    "every step passed analysis".into(),
                );
            }
            Strategy::BlueGreen if s.step == BG_PREVIEW => {
                self.enter_step(&mut s, BG_POST_PROMOTION);
                // The preview is already at full size: the switch happens now.
                s.step_started = Some(self.now());
                s.message = format!("switched traffic to revision {}", s.revision);
                self.note(false, "Switched", s.message.clone());
            }
            Strategy::BlueGreen if s.step == BG_POST_PROMOTION => {
                self.enter_step(&mut s, BG_SCALE_DOWN);
                s.step_started = Some(self.now());
                s.message = format!(
                    "post-promotion analysis passed; revision {} scales down in {}s",
                    stable_of(&s),
                    self.i.spec.blue_green.scale_down_delay_seconds
                );
                self.note(false, "PostPromotionPassed", s.message.clone());
            }
            Strategy::BlueGreen => {
                if self.step_elapsed(&s) {
                    self.end(
                        &mut s,
                        RolloutPhase::Promoted,
                        "switched, and the scale-down delay passed".into(),
                    );
                }
            }
        }
        s
    }

    fn finish_decision(self, state: Option<RolloutStatus>) -> Decision {
        let total = self.i.total;
        let mut replicas = BTreeMap::new();
        let mut active = None;
        let mut canary_weight = None;
        let mut route_weights = Vec::new();
        let mut requeue = Duration::from_secs(300);
        let running = state
            .as_ref()
            .filter(|s| !s.phase.finished() && s.stable.is_some());
        match (running, &self.stable) {
            (Some(s), _) => {
                let stable = stable_of(s).to_string();
                let new = new_replicas(self.i, s, total);
                replicas.insert(stable.clone(), stable_replicas(self.i, s, total, new));
                replicas.insert(s.revision.clone(), new);
                let new_ready = self.ready(&s.revision);
                let serves_new = match s.strategy {
                    Strategy::Canary => {
                        let weight = if self.i.routed {
                            canary_step_weight(self.i.spec, s)
                        } else {
                            traffic::replica_share(self.ready(&stable), new_ready)
                        };
                        Some(weight)
                    }
                    Strategy::BlueGreen => {
                        let switched = s.step == BG_POST_PROMOTION
                            || (s.step == BG_SCALE_DOWN && new_ready >= total);
                        active = Some(if switched {
                            s.revision.clone()
                        } else {
                            stable.clone()
                        });
                        Some(if switched { 100 } else { 0 })
                    }
                };
                canary_weight = serves_new;
                let weight = serves_new.unwrap_or(0);
                route_weights = vec![(stable, 100 - weight), (s.revision.clone(), weight)];
                requeue = match s.phase {
                    RolloutPhase::Paused => Duration::from_secs(60),
                    _ => self.requeue(s),
                };
            }
            (None, Some(stable)) => {
                replicas.insert(stable.clone(), total);
                route_weights = vec![(stable.clone(), 100)];
            }
            (None, None) => {
                // The first revision, not ready yet.
                if let Some(s) = &state {
                    replicas.insert(s.revision.clone(), total);
                    route_weights = vec![(s.revision.clone(), 100)];
                    requeue = Duration::from_secs(5);
                }
            }
        }
        Decision {
            rollout: state,
            stable: self.stable,
            replicas,
            active,
            canary_weight,
            route_weights,
            history: self.history,
            notes: self.notes,
            requeue,
        }
    }

    fn requeue(&self, s: &RolloutStatus) -> Duration {
        let wait = match next_analysis(self.i.spec, s) {
            Some(at) if analysing_step(self.i.spec, s) => at.duration_since(self.i.now),
            _ if s.step_started.is_some() => SignedDuration::from_secs(1),
            _ => SignedDuration::from_secs(2),
        };
        Duration::from_millis(wait.as_millis().clamp(500, 10_000) as u64)
    }
}

fn stable_of(s: &RolloutStatus) -> &str {
    s.stable.as_deref().unwrap_or(&s.revision)
}

/// Whether the rollout's current step runs analysis.
fn analysing_step(spec: &RolloutSpec, s: &RolloutStatus) -> bool {
    match s.strategy {
        Strategy::Canary => (s.step as usize) < spec.canary.steps.len(),
        Strategy::BlueGreen => s.step == BG_PREVIEW || s.step == BG_POST_PROMOTION,
    }
}

/// When the next analysis is due: one interval after the step's pods were ready or
/// after the latest analysis, whichever is later.
fn next_analysis(spec: &RolloutSpec, s: &RolloutStatus) -> Option<Timestamp> {
    let started = s.step_started.as_ref()?.0;
    let from = match &s.last_analysis {
        Some(last) if last.0 > started => last.0,
        _ => started,
    };
    from.checked_add(SignedDuration::from_secs(
        spec.analysis.interval_seconds.into(),
    ))
    .ok()
}

/// Traffic percentage of the current canary step (100 while promoting).
fn canary_step_weight(spec: &RolloutSpec, s: &RolloutStatus) -> i32 {
    spec.canary
        .steps
        .get(s.step as usize)
        .copied()
        .unwrap_or(100)
}

/// Pods the new revision needs at the rollout's current step. Stream workers
/// are sized as routed traffic is: the step's share of the total.
fn new_replicas(i: &Input, s: &RolloutStatus, total: i32) -> i32 {
    match s.strategy {
        Strategy::Canary => traffic::canary_replicas(
            total,
            canary_step_weight(i.spec, s),
            i.routed || i.streaming,
        ),
        Strategy::BlueGreen => total,
    }
}

/// Pods the stable revision keeps while a rollout runs: all of them (capacity
/// never drops), except for stream workers of a canary, whose `new` workers
/// replace as many stable ones; the stable keeps at least one until the
/// canary takes all the traffic.
fn stable_replicas(i: &Input, s: &RolloutStatus, total: i32, new: i32) -> i32 {
    if i.streaming && s.strategy == Strategy::Canary {
        let floor = i32::from(canary_step_weight(i.spec, s) < 100);
        (total - new).max(floor)
    } else {
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::rollout::{CheckResult, CheckVerdict};
    use crate::rollout::analysis::Analysis;

    /// A rollout world: what the machine sees, advanced by applying its decisions
    /// (the Deployment controller is instant unless `lag` holds pods back).
    #[derive(Clone)]
    struct World {
        spec: RolloutSpec,
        desired: String,
        model: ModelSpec,
        runtime: RuntimeSpec,
        total: i32,
        routed: bool,
        streaming: bool,
        rollout: Option<RolloutStatus>,
        stable: Option<String>,
        history: Vec<HistoryEntry>,
        ready: BTreeMap<String, i32>,
        now: Timestamp,
        /// Revisions whose pods never become ready.
        stuck: Vec<String>,
        /// Why the desired revision can never serve.
        unservable: Option<String>,
    }

    fn model(uri: &str) -> ModelSpec {
        serde_json::from_value(serde_json::json!({"storageUri": uri, "version": "3"})).unwrap()
    }

    fn verdict(v: CheckVerdict) -> Analysis {
        Analysis {
            verdict: v,
            checks: vec![CheckResult {
                name: "error-rate".into(),
                query: "q".into(),
                value: (v == CheckVerdict::Pass || v == CheckVerdict::Fail).then_some(0.5),
                threshold: "<= 0.02".into(),
                verdict: v,
                detail: None,
            }],
        }
    }

    impl World {
        /// Revision `a` stable at 2 pods, spec now at `b`.
        fn rolling(strategy: Strategy) -> Self {
            let spec = RolloutSpec {
                strategy,
                ..RolloutSpec::default()
            };
            let mut w = World {
                spec,
                desired: "a".into(),
                model: model("file:///a"),
                runtime: RuntimeSpec::default(),
                total: 2,
                routed: false,
                streaming: false,
                rollout: None,
                stable: None,
                history: Vec::new(),
                ready: BTreeMap::new(),
                now: Timestamp::from_second(1_800_000_000).unwrap(),
                stuck: Vec::new(),
                unservable: None,
            };
            w.tick(None, None);
            w.tick(None, None);
            assert_eq!(w.stable.as_deref(), Some("a"));
            w.desired = "b".into();
            w.model = model("file:///b");
            w
        }

        fn input<'a>(
            &'a self,
            analysis: Option<&'a Analysis>,
            command: Option<Command>,
        ) -> Input<'a> {
            Input {
                spec: &self.spec,
                desired: &self.desired,
                model: &self.model,
                runtime: &self.runtime,
                total: self.total,
                routed: self.routed,
                streaming: self.streaming,
                previous: self.rollout.as_ref(),
                stable: self.stable.as_deref(),
                history: &self.history,
                ready: &self.ready,
                unservable: self.unservable.as_deref(),
                analysis,
                command,
                now: self.now,
            }
        }

        /// One reconcile: decide, record the status, and let the pods follow.
        fn tick(&mut self, analysis: Option<&Analysis>, command: Option<Command>) -> Decision {
            let d = decide(&self.input(analysis, command));
            // The status round-trips through JSON, as through the API server.
            self.rollout = d
                .rollout
                .as_ref()
                .map(|r| serde_json::from_value(serde_json::to_value(r).unwrap()).unwrap());
            self.stable = d.stable.clone();
            self.history = d.history.clone();
            self.ready = d
                .replicas
                .iter()
                .map(|(rev, n)| (rev.clone(), if self.stuck.contains(rev) { 0 } else { *n }))
                .collect();
            d
        }

        fn wait(&mut self, seconds: i64) {
            self.now = self
                .now
                .checked_add(SignedDuration::from_secs(seconds))
                .unwrap();
        }

        /// Waits for the next analysis and feeds it `v`.
        fn analyse(&mut self, v: CheckVerdict) -> Decision {
            self.wait(self.spec.analysis.interval_seconds.into());
            assert!(self.due(), "an analysis is due");
            self.tick(Some(&verdict(v)), None)
        }

        fn due(&self) -> bool {
            analysis_due(&self.spec, self.rollout.as_ref(), &self.desired, self.now)
        }

        fn state(&self) -> &RolloutStatus {
            self.rollout.as_ref().unwrap()
        }
    }

    fn reasons(d: &Decision) -> Vec<&'static str> {
        d.notes.iter().map(|n| n.reason).collect()
    }

    fn replicas(pairs: &[(&str, i32)]) -> BTreeMap<String, i32> {
        pairs.iter().map(|(r, n)| (r.to_string(), *n)).collect()
    }

    #[test]
    fn first_revision_is_stable_once_ready_at_full_size() {
        let mut w = World::rolling(Strategy::Canary);
        // rolling() did it: check what it left.
        assert_eq!(w.history.len(), 1);
        assert_eq!(w.history[0].revision, "a");
        assert_eq!(w.history[0].outcome, RolloutPhase::Promoted);
        assert_eq!(w.history[0].model.storage_uri, "file:///a");
        // And from scratch, a not-ready first revision waits.
        w.stable = None;
        w.rollout = None;
        w.history.clear();
        w.ready.clear();
        w.stuck = vec!["b".into()];
        let d = w.tick(None, None);
        assert_eq!(d.replicas, replicas(&[("b", 2)]));
        assert_eq!(d.stable, None);
        assert_eq!(w.state().phase, RolloutPhase::Progressing);
        assert!(!w.due(), "the first revision is not analysed");
    }

    #[test]
    fn canary_promotes_through_every_step() {
        let mut w = World::rolling(Strategy::Canary);
        let d = w.tick(None, None);
        assert_eq!(reasons(&d), ["RolloutStarted"]);
        // Step 0 (25%): the stable keeps its 2 pods, the canary gets 1 (33%).
        assert_eq!(d.replicas, replicas(&[("a", 2), ("b", 1)]));
        assert!(!w.due(), "no analysis before the canary is ready");
        let d = w.tick(None, None);
        assert_eq!(d.canary_weight, Some(33));
        assert!(w.state().step_started.is_some());
        assert!(!w.due(), "the first analysis waits an interval");
        let mut steps = vec![];
        for _ in 0..20 {
            if w.state().phase != RolloutPhase::Progressing {
                break;
            }
            let d = if w.due() || w.state().step_started.is_some() && w.state().step < 2 {
                w.analyse(CheckVerdict::Pass)
            } else {
                w.tick(None, None)
            };
            steps.push(w.state().step);
            if w.state().step == 1 && d.notes.iter().any(|n| n.reason == "StepAdvanced") {
                assert_eq!(d.replicas, replicas(&[("a", 2), ("b", 2)]));
            }
        }
        // Three analyses per 30 s step at a 10 s interval, then promotion.
        assert_eq!(steps, [0, 0, 1, 1, 1, 1, 2, 2], "{steps:?}");
        assert_eq!(w.state().phase, RolloutPhase::Promoted);
        let d = w.tick(None, None);
        assert_eq!(d.replicas, replicas(&[("b", 2)]), "the old revision goes");
        assert_eq!(d.stable.as_deref(), Some("b"));
        assert_eq!(d.canary_weight, None);
        let last = w.history.last().unwrap();
        assert_eq!(
            (last.revision.as_str(), last.outcome),
            ("b", RolloutPhase::Promoted)
        );
        assert_eq!(last.model.storage_uri, "file:///b");
    }

    /// Each row: the analyses fed at step 0 -> phase after the last, failures, no-data count.
    #[test]
    fn analysis_transitions() {
        use CheckVerdict::*;
        use RolloutPhase::*;
        let rows: Vec<(Vec<CheckVerdict>, RolloutPhase, u32, u32)> = vec![
            (vec![Pass], Progressing, 0, 0),
            (vec![Fail], Progressing, 1, 0),
            (vec![Fail, Fail], RolledBack, 2, 0),
            (vec![Fail, Pass, Fail], Progressing, 1, 0),
            (vec![NoData], Progressing, 0, 1),
            (vec![NoData; 12], RolledBack, 0, 12),
            (vec![NoData, Fail, Fail], RolledBack, 2, 0),
            (vec![Error; 30], Progressing, 0, 0),
            (vec![Fail, Error, Fail], RolledBack, 2, 0),
            (vec![NoData, Error, Pass], Progressing, 0, 0),
        ];
        for (i, (verdicts, phase, failures, no_data)) in rows.into_iter().enumerate() {
            let mut w = World::rolling(Strategy::Canary);
            w.spec.canary.step_seconds = 100_000; // stay at step 0
            w.tick(None, None);
            w.tick(None, None);
            let mut last = None;
            for v in verdicts {
                last = Some(w.analyse(v));
            }
            let d = last.unwrap();
            let s = w.state();
            assert_eq!(
                (s.phase, s.failures, s.no_data),
                (phase, failures, no_data),
                "row {i}"
            );
            assert_eq!(s.step, 0, "row {i}");
            assert!(!s.checks.is_empty(), "row {i}: results kept in status");
            match phase {
                RolledBack => {
                    assert_eq!(d.replicas, replicas(&[("a", 2)]), "row {i}");
                    assert_eq!(d.stable.as_deref(), Some("a"));
                    assert!(reasons(&d).contains(&"RolledBack"), "row {i}");
                    assert_eq!(w.history.last().unwrap().outcome, RolledBack);
                    assert!(!w.due(), "row {i}: no analysis after the end");
                }
                _ => assert_eq!(d.replicas, replicas(&[("a", 2), ("b", 1)]), "row {i}"),
            }
        }
    }

    #[test]
    fn a_starved_canary_is_named_in_events_status_and_the_rollback_reason() {
        let starved = Analysis {
            verdict: CheckVerdict::NoData,
            checks: vec![CheckResult {
                name: "traffic".into(),
                query: "q".into(),
                value: Some(0.0),
                threshold: "> 0 while stable serves".into(),
                verdict: CheckVerdict::NoData,
                detail: Some("the canary received 0 of 12,105 requests in the window".into()),
            }],
        };
        let mut w = World::rolling(Strategy::Canary);
        w.spec.canary.step_seconds = 100_000;
        w.tick(None, None);
        w.tick(None, None);
        let mut d = None;
        for _ in 0..w.spec.analysis.no_data_limit {
            w.wait(w.spec.analysis.interval_seconds.into());
            let decision = w.tick(Some(&starved), None);
            if w.state().phase == RolloutPhase::Progressing {
                assert_eq!(reasons(&decision), ["AnalysisStarved"]);
                assert!(
                    w.state()
                        .message
                        .contains("holding, starved, the canary received 0 of 12,105"),
                    "{}",
                    w.state().message
                );
                assert_eq!(w.state().checks[0].name, "traffic");
            }
            d = Some(decision);
        }
        assert!(reasons(&d.unwrap()).contains(&"RolledBack"));
        let last = w.history.last().unwrap();
        assert_eq!(last.outcome, RolloutPhase::RolledBack);
        assert!(
            last.reason.starts_with(
                "starved, the canary received 0 of 12,105 requests in the window for 12 analyses in a row"
            ),
            "{}",
            last.reason
        );
    }

    #[test]
    fn prometheus_down_never_promotes_however_long() {
        let mut w = World::rolling(Strategy::Canary);
        w.tick(None, None);
        w.tick(None, None);
        for _ in 0..100 {
            let d = w.analyse(CheckVerdict::Error);
            assert_eq!(d.replicas, replicas(&[("a", 2), ("b", 1)]));
            assert_eq!(reasons(&d), ["AnalysisUnavailable"]);
        }
        assert_eq!(
            (w.state().phase, w.state().step),
            (RolloutPhase::Progressing, 0)
        );
        assert!(w.state().message.contains("Prometheus unavailable"));
    }

    #[test]
    fn pods_that_never_get_ready_fail_at_the_progress_deadline() {
        let mut w = World::rolling(Strategy::Canary);
        w.stuck = vec!["b".into()];
        w.tick(None, None);
        w.wait(299);
        assert_eq!(w.tick(None, None).replicas, replicas(&[("a", 2), ("b", 1)]));
        w.wait(2);
        let d = w.tick(None, None);
        assert_eq!(w.state().phase, RolloutPhase::RolledBack);
        assert!(w.state().message.contains("progressDeadlineSeconds"));
        assert_eq!(d.replicas, replicas(&[("a", 2)]));
    }

    #[test]
    fn a_revision_that_can_never_serve_is_rolled_back_at_once() {
        let mut w = World::rolling(Strategy::Canary);
        w.stuck = vec!["b".into()];
        w.tick(None, None);
        w.unservable = Some("its optimized model was refused".into());
        let d = w.tick(None, None);
        assert_eq!(w.state().phase, RolloutPhase::RolledBack);
        assert_eq!(
            w.state().message,
            "revision b cannot serve: its optimized model was refused"
        );
        assert_eq!(d.replicas, replicas(&[("a", 2)]));
        assert_eq!(w.stable.as_deref(), Some("a"));
    }

    #[test]
    fn commands() {
        use Command::*;
        use RolloutPhase::*;
        // pause holds: no analysis is due, the step stays.
        let mut w = World::rolling(Strategy::Canary);
        w.tick(None, None);
        w.tick(None, None);
        let d = w.tick(None, Some(Pause));
        assert_eq!((w.state().phase, reasons(&d)), (Paused, vec!["Paused"]));
        w.wait(1000);
        assert!(!w.due());
        assert_eq!(w.tick(None, None).replicas, replicas(&[("a", 2), ("b", 1)]));
        // resume restarts the step's clock.
        let d = w.tick(None, Some(Resume));
        assert_eq!(
            (w.state().phase, reasons(&d)),
            (Progressing, vec!["Resumed"])
        );
        assert_eq!(w.state().step, 0);
        w.tick(None, None);
        assert!(w.state().step_started.is_some());
        // promote skips the remaining analysis.
        let d = w.tick(None, Some(Promote));
        assert_eq!(reasons(&d), ["PromotionForced"]);
        assert_eq!(d.replicas, replicas(&[("a", 2), ("b", 2)]));
        let d = w.tick(None, None);
        assert_eq!(w.state().phase, Promoted);
        assert_eq!(d.stable.as_deref(), Some("b"));
        // a command without a rollout is ignored, with a warning.
        let d = w.tick(None, Some(Abort));
        assert_eq!(reasons(&d), ["CommandIgnored"]);
        assert_eq!(w.state().phase, Promoted);
        // abort: the stable revision serves alone.
        let mut w = World::rolling(Strategy::Canary);
        w.tick(None, None);
        let d = w.tick(None, Some(Abort));
        assert_eq!(w.state().phase, Aborted);
        assert_eq!(d.replicas, replicas(&[("a", 2)]));
        assert_eq!(w.history.last().unwrap().reason, "aborted by annotation");
        // resume while progressing is ignored.
        let mut w = World::rolling(Strategy::Canary);
        w.tick(None, None);
        assert_eq!(reasons(&w.tick(None, Some(Resume))), ["CommandIgnored"]);
    }

    #[test]
    fn a_newer_revision_supersedes_and_the_stable_one_cancels() {
        let mut w = World::rolling(Strategy::Canary);
        w.tick(None, None);
        w.tick(None, None);
        w.desired = "c".into();
        let d = w.tick(None, None);
        assert_eq!(reasons(&d), ["Aborted", "RolloutStarted"]);
        assert_eq!(w.history.last().unwrap().reason, "superseded by revision c");
        assert_eq!(w.history.last().unwrap().model.storage_uri, "file:///b");
        assert_eq!(d.replicas, replicas(&[("a", 2), ("c", 1)]));
        assert_eq!(w.state().stable.as_deref(), Some("a"));
        // Back to the stable revision: the rollout ends, nothing new starts.
        w.desired = "a".into();
        let d = w.tick(None, None);
        assert_eq!(reasons(&d), ["Aborted"]);
        assert_eq!(d.replicas, replicas(&[("a", 2)]));
        let d = w.tick(None, None);
        assert!(d.notes.is_empty());
    }

    #[test]
    fn a_rolled_back_revision_is_not_retried_until_the_spec_changes() {
        let mut w = World::rolling(Strategy::Canary);
        w.tick(None, None);
        w.tick(None, None);
        w.analyse(CheckVerdict::Fail);
        w.analyse(CheckVerdict::Fail);
        assert_eq!(w.state().phase, RolloutPhase::RolledBack);
        for _ in 0..3 {
            w.wait(60);
            let d = w.tick(None, None);
            assert_eq!(d.replicas, replicas(&[("a", 2)]));
            assert!(d.notes.is_empty());
        }
        w.desired = "c".into();
        let d = w.tick(None, None);
        assert_eq!(reasons(&d), ["RolloutStarted"]);
        assert_eq!(d.replicas, replicas(&[("a", 2), ("c", 1)]));
    }

    #[test]
    fn blue_green_previews_switches_and_scales_down_after_the_delay() {
        let mut w = World::rolling(Strategy::BlueGreen);
        let d = w.tick(None, None);
        assert_eq!(
            d.replicas,
            replicas(&[("a", 2), ("b", 2)]),
            "full-size preview"
        );
        assert_eq!(d.active.as_deref(), Some("a"));
        assert_eq!(d.canary_weight, Some(0));
        w.tick(None, None);
        for _ in 0..3 {
            w.analyse(CheckVerdict::Pass);
        }
        assert_eq!(w.state().step, BG_POST_PROMOTION);
        let d = w.tick(None, None);
        assert_eq!(d.active.as_deref(), Some("b"), "switched");
        assert_eq!(d.route_weights, [("a".into(), 0), ("b".into(), 100)]);
        for _ in 0..3 {
            w.analyse(CheckVerdict::Pass);
        }
        assert_eq!(w.state().step, BG_SCALE_DOWN);
        w.wait(29);
        let d = w.tick(None, None);
        assert_eq!(
            d.replicas,
            replicas(&[("a", 2), ("b", 2)]),
            "old kept during the delay"
        );
        assert!(!w.due());
        w.wait(1);
        let d = w.tick(None, None);
        assert_eq!(w.state().phase, RolloutPhase::Promoted);
        assert_eq!(d.replicas, replicas(&[("b", 2)]));
        assert_eq!(d.active, None);
    }

    #[test]
    fn blue_green_switches_back_when_post_promotion_analysis_fails() {
        let mut w = World::rolling(Strategy::BlueGreen);
        w.tick(None, None);
        w.tick(None, None);
        for _ in 0..3 {
            w.analyse(CheckVerdict::Pass);
        }
        w.analyse(CheckVerdict::Fail);
        let d = w.analyse(CheckVerdict::Fail);
        assert_eq!(
            reasons(&d),
            ["AnalysisFailed", "SwitchedBack", "RolledBack"]
        );
        assert_eq!(d.replicas, replicas(&[("a", 2)]));
        assert_eq!(d.active, None);
        assert_eq!(d.stable.as_deref(), Some("a"));
    }

    #[test]
    fn blue_green_preview_failure_never_switches() {
        let mut w = World::rolling(Strategy::BlueGreen);
        w.tick(None, None);
        w.tick(None, None);
        w.analyse(CheckVerdict::Fail);
        let d = w.analyse(CheckVerdict::Fail);
        assert_eq!(reasons(&d), ["AnalysisFailed", "RolledBack"]);
        assert_eq!(d.replicas, replicas(&[("a", 2)]));
    }

    #[test]
    fn routed_canary_weights_are_exact() {
        let mut w = World::rolling(Strategy::Canary);
        w.routed = true;
        w.total = 10;
        w.tick(None, None);
        let d = w.tick(None, None);
        assert_eq!(d.replicas, replicas(&[("a", 10), ("b", 3)]));
        assert_eq!(d.canary_weight, Some(25));
        assert_eq!(d.route_weights, [("a".into(), 75), ("b".into(), 25)]);
    }

    #[test]
    fn stream_canary_workers_replace_stable_ones() {
        let mut w = World::rolling(Strategy::Canary);
        w.streaming = true;
        w.total = 4;
        w.tick(None, None);
        let d = w.tick(None, None);
        // Step 25%: one of the group's four members.
        assert_eq!(d.replicas, replicas(&[("a", 3), ("b", 1)]));
        // One worker in all: the stable keeps it next to the canary's.
        let mut w = World::rolling(Strategy::Canary);
        w.streaming = true;
        w.total = 1;
        w.tick(None, None);
        let d = w.tick(None, None);
        assert_eq!(d.replicas, replicas(&[("a", 1), ("b", 1)]));
        assert_eq!(d.canary_weight, Some(50));
    }

    #[test]
    fn history_keeps_the_newest_entries_up_to_the_limit() {
        let mut w = World::rolling(Strategy::Canary);
        w.spec.history_limit = 2;
        for (i, rev) in ["b", "c", "d"].iter().enumerate() {
            w.desired = rev.to_string();
            w.tick(None, None);
            w.tick(None, Some(Command::Promote));
            w.tick(None, None);
            assert_eq!(w.stable.as_deref(), Some(*rev), "{i}");
        }
        let revs: Vec<_> = w.history.iter().map(|h| h.revision.as_str()).collect();
        assert_eq!(revs, ["c", "d"]);
    }

    /// The same rollout run straight through and with the operator restarted before
    /// every reconcile (state only from status) or crashing after acting but before
    /// writing status (the reconcile repeats): identical steps, none skipped or repeated.
    #[test]
    fn a_restarted_operator_resumes_from_status() {
        use CheckVerdict::*;
        let script = [Pass, Pass, Pass, NoData, Pass, Pass, Pass, Pass];
        let run = |crash_before_status: bool| {
            let mut w = World::rolling(Strategy::Canary);
            let mut trace = vec![];
            let mut fed = 0;
            for _ in 0..40 {
                if w.state().phase.finished() && w.state().revision == "b" {
                    break;
                }
                let analysis = if w.due() {
                    fed += 1;
                    Some(verdict(script[(fed - 1).min(script.len() - 1)]))
                } else {
                    None
                };
                if crash_before_status {
                    // A decision acted on but never recorded: the next operator sees the
                    // same status and pods and decides the same.
                    let mut lost = w.clone();
                    let first = lost.tick(analysis.as_ref(), None);
                    let again = decide(&w.input(analysis.as_ref(), None));
                    assert_eq!(first, again);
                }
                let d = w.tick(analysis.as_ref(), None);
                trace.push((w.state().step, w.state().phase, d.replicas.clone()));
                w.wait(if w.due() { 0 } else { 5 });
            }
            (trace, w.history.clone())
        };
        let (straight, history) = run(false);
        let (restarted, history2) = run(true);
        assert_eq!(straight, restarted);
        assert_eq!(history, history2);
        let steps: Vec<u32> = straight.iter().map(|t| t.0).collect();
        assert!(
            steps.windows(2).all(|p| p[1] == p[0] || p[1] == p[0] + 1),
            "{steps:?}"
        );
        assert_eq!(steps.first(), Some(&0));
        assert_eq!(straight.last().unwrap().1, RolloutPhase::Promoted);
    }
}
