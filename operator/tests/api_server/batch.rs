//! BatchInference scenarios of `tests/api_server.rs`: the CRD's rules, a
//! one-time run's Job (its spec and owner), its status from the Job status and
//! its pods' termination messages as the Job controller and the kubelet would
//! write them (no controller manager runs here, so the test writes them), a
//! rerun, a failed shard, a schedule's CronJob, and a missing
//! InferenceService.

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use sluice_operator::crd::{BatchInference, BatchPhase, BatchRun, InferenceService};
use sluice_operator::names::{BATCH_LABEL, COMPLETION_INDEX_ANNOTATION, JOB_NAME_LABEL};

use super::{dynamic, events, eventually, manifest, namespace};

pub fn batches(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::erase::<BatchInference>(&()),
    )
}

pub fn batch_manifest(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "serving.sluice.dev/v1alpha1",
        "kind": "BatchInference",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn labelled(name: &str) -> ListParams {
    ListParams::default().labels(&format!("{BATCH_LABEL}={name}"))
}

fn condition(batch: &BatchInference, type_: &str) -> Option<(String, String, String)> {
    let c = batch
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until `name` has an Event of `reason` whose note contains `text`.
async fn event(client: &Client, ns: &str, name: &str, type_: &str, reason: &str, text: &str) {
    let what = format!("a {type_} {reason} Event about {name} says {text:?}");
    let deadline = std::time::Instant::now() + super::TIMEOUT;
    loop {
        let published = events(client, ns, name).await;
        if published
            .iter()
            .any(|e| e.0 == type_ && e.1 == reason && e.2.contains(text))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}; the Events are {published:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The run Jobs of `name`, oldest first.
pub async fn jobs_of(jobs: &Api<Job>, name: &str) -> Vec<Job> {
    let mut listed = jobs.list(&labelled(name)).await.unwrap().items;
    listed.sort_by_key(|j| j.creation_timestamp());
    listed
}

/// A shard's pod of `job` whose batch container ended with `exit_code` and
/// `summary`, as the Job controller makes it and the kubelet reports it.
async fn finished_shard(
    pods: &Api<Pod>,
    batch: &str,
    job: &str,
    shard: i32,
    exit_code: i32,
    summary: Value,
) {
    let name = format!("{job}-{shard}-x");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {BATCH_LABEL: batch, JOB_NAME_LABEL: job},
                     "annotations": {COMPLETION_INDEX_ANNOTATION: shard.to_string()}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "batch", "image": "sluice-server"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = json!({"status": {
        "phase": if exit_code == 0 { "Succeeded" } else { "Failed" },
        "initContainerStatuses": [{"name": "fetch-model", "image": "sluice-server", "imageID": "",
            "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
        "containerStatuses": [{"name": "batch", "image": "sluice-server", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"terminated": {"exitCode": exit_code,
            "reason": if exit_code == 0 { "Completed" } else { "Error" },
            "message": summary.to_string(), "finishedAt": "2026-01-15T08:00:00Z"}}}],
    }});
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

/// Writes a Job's status as the Job controller does when it ends.
async fn end_job(jobs: &Api<Job>, job: &str, status: Value) {
    jobs.patch_status(
        job,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .unwrap_or_else(|e| panic!("patching the status of Job {job}: {e}"));
}

/// The BatchInference's latest run once `done` holds for it.
async fn latest_run(
    api: &Api<BatchInference>,
    name: &str,
    what: &str,
    done: impl Fn(&BatchRun) -> bool,
) -> BatchRun {
    eventually(what, || async {
        let run = api.get(name).await.ok()?.status?.latest_run?;
        done(&run).then_some(run)
    })
    .await
}

/// Invalid BatchInference manifests are refused by the API server with the
/// field named.
pub async fn invalid_manifests(client: Client) {
    let ns = "batch-invalid";
    namespace(&client, ns).await;
    let api = batches(&client, ns);
    let model = json!({"storageUri": "s3://models/fraud/model.onnx"});
    let cases = [
        (
            json!({"input": "s3://d/in/", "output": "s3://d/out"}),
            "set exactly one of spec.model",
        ),
        (
            json!({"model": model, "inferenceServiceRef": {"name": "fraud"}, "input": "s3://d/in/", "output": "s3://d/out"}),
            "set exactly one of spec.model",
        ),
        (
            json!({"model": model, "input": "https://d/in.csv", "output": "s3://d/out"}),
            "spec.input must start with s3://, pvc:// or file://",
        ),
        (
            json!({"model": model, "input": "s3://d/in/", "output": "pvc://claim-only"}),
            "spec.output pvc:// must be pvc://<claim-name>/<path>",
        ),
        (
            json!({"model": model, "input": "s3://d/in/", "output": "s3://d/out", "parallelism": 0}),
            "spec.parallelism",
        ),
        (
            json!({"model": model, "input": "s3://d/in/", "output": "s3://d/out", "parallelism": 5000}),
            "spec.parallelism",
        ),
        (
            json!({"model": model, "input": "s3://d/in/", "output": "s3://d/out", "format": "xlsx"}),
            "spec.format",
        ),
        (
            json!({"model": model, "input": "s3://d/in/", "output": "s3://d/out", "timeZone": "UTC"}),
            "spec.timeZone needs spec.schedule",
        ),
        (
            json!({"model": model, "input": "s3://d/in/", "output": "s3://d/out", "maxRejectRatio": 2}),
            "spec.maxRejectRatio",
        ),
        (
            json!({"model": model, "output": "s3://d/out"}),
            "spec.input",
        ),
    ];
    for (i, (spec, expected)) in cases.into_iter().enumerate() {
        let err = api
            .create(
                &PostParams::default(),
                &batch_manifest(&format!("bad-{i}"), spec.clone()),
            )
            .await
            .expect_err(&format!("{spec} must be rejected"));
        let message = err.to_string();
        assert!(
            message.contains(expected),
            "rejection of {spec} says {message:?}, which does not name {expected:?}"
        );
    }
}

/// A one-time run: its Job, its status from the Job and its pods, the Events;
/// not made again; a rerun; a failed shard named in status and a Warning.
pub async fn one_time_runs(client: Client) {
    let ns = "batch-once";
    namespace(&client, ns).await;
    let typed: Api<BatchInference> = Api::namespaced(client.clone(), ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    batches(&client, ns)
        .create(
            &PostParams::default(),
            &batch_manifest(
                "score",
                json!({
                    "model": {"storageUri": "file:///opt/sluice/models/iris/1/model.onnx"},
                    "input": "file:///var/lib/sluice/batch/in/",
                    "output": "file:///var/lib/sluice/batch/out",
                    "format": "csv",
                    "parallelism": 2,
                    "credentialsSecret": "data",
                }),
            ),
        )
        .await
        .unwrap();
    let uid = typed.get("score").await.unwrap().metadata.uid.unwrap();
    let job = eventually("the run's Job is created", || async {
        jobs_of(&jobs, "score").await.into_iter().next()
    })
    .await;
    let job_name = job.name_any();
    assert!(job_name.starts_with("score-"), "{job_name}");
    let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("BatchInference", uid.as_str(), Some(true))
    );
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
    assert_eq!((spec.completions, spec.parallelism), (Some(2), Some(2)));
    assert_eq!(spec.backoff_limit_per_index, Some(3));
    assert_eq!(spec.pod_replacement_policy.as_deref(), Some("Failed"));
    let template = &spec.template;
    let labels = template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
    assert_eq!(
        labels.get(JOB_NAME_LABEL),
        Some(&job_name),
        "the API server labels the pods with the Job's name, which SLUICE_BATCH_RUN reads"
    );
    let pod_spec = template.spec.as_ref().unwrap();
    assert_eq!(pod_spec.restart_policy.as_deref(), Some("Never"));
    let args = pod_spec.containers[0].args.as_ref().unwrap().join(" ");
    assert!(
        args.contains("--input file:///var/lib/sluice/batch/in/ --output file:///var/lib/sluice/batch/out/$(SLUICE_BATCH_RUN) --format csv --shard $(JOB_COMPLETION_INDEX) --shards 2"),
        "{args}"
    );
    latest_run(&typed, "score", "status shows the run, pending", |r| {
        r.job == job_name && r.phase == BatchPhase::Pending
    })
    .await;
    event(&client, ns, "score", "Normal", "RunStarted", &job_name).await;

    // The shards run and finish, as the Job controller and the kubelet report it.
    end_job(
        &jobs,
        &job_name,
        json!({"startTime": "2026-01-15T07:59:00Z", "active": 2, "ready": 2}),
    )
    .await;
    latest_run(&typed, "score", "the run is running", |r| {
        r.phase == BatchPhase::Running
    })
    .await;
    finished_shard(&pods, "score", &job_name, 0, 0, json!({"shard": 0, "shards": 2, "files": 2, "rows": 1200, "rejected": 2, "parts": 1, "resumedParts": 0, "seconds": 2.0, "rowsPerSecond": 600.0, "output": "x"})).await;
    finished_shard(&pods, "score", &job_name, 1, 0, json!({"shard": 1, "shards": 2, "files": 1, "rows": 800, "rejected": 0, "parts": 1, "resumedParts": 0, "seconds": 4.0, "rowsPerSecond": 200.0, "output": "x"})).await;
    end_job(
        &jobs,
        &job_name,
        json!({
            "active": 0, "ready": 0, "succeeded": 2, "completedIndexes": "0-1",
            "completionTime": "2026-01-15T08:00:00Z",
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": "2026-01-15T08:00:00Z", "lastTransitionTime": "2026-01-15T08:00:00Z"},
                {"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": "2026-01-15T08:00:00Z", "lastTransitionTime": "2026-01-15T08:00:00Z"}
            ],
        }),
    )
    .await;
    let run = latest_run(&typed, "score", "the run succeeded", |r| {
        r.phase == BatchPhase::Succeeded
    })
    .await;
    assert_eq!((run.rows, run.rejected), (2000, 2));
    assert_eq!(run.completions, "2/2");
    assert_eq!(
        run.rows_per_second,
        Some(500.0),
        "2000 rows over the longest shard's 4 s"
    );
    assert_eq!(
        run.output,
        format!("file:///var/lib/sluice/batch/out/{job_name}")
    );
    let batch = typed.get("score").await.unwrap();
    let status = batch.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(BatchPhase::Succeeded));
    assert_eq!(status.history.len(), 1);
    assert_eq!(condition(&batch, "Succeeded").unwrap().1, "RunSucceeded");
    assert_eq!(condition(&batch, "ModelFetched").unwrap().0, "True");
    event(
        &client,
        ns,
        "score",
        "Normal",
        "RunSucceeded",
        "2000 rows predicted and 2 rejected",
    )
    .await;

    // Nothing changes: no new run.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(jobs_of(&jobs, "score").await.len(), 1, "a run is made once");

    // The rerun annotation makes a new run, in a folder of its own.
    batches(&client, ns)
        .patch(
            "score",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"serving.sluice.dev/rerun": "1"}}})),
        )
        .await
        .unwrap();
    let second = eventually("the rerun's Job is created", || async {
        let all = jobs_of(&jobs, "score").await;
        (all.len() == 2).then(|| all[1].name_any())
    })
    .await;
    assert_ne!(second, job_name);

    // One of its shards meets a bad row; its retries are spent.
    end_job(
        &jobs,
        &second,
        json!({"startTime": "2026-01-15T09:00:00Z", "active": 1, "ready": 1}),
    )
    .await;
    finished_shard(
        &pods,
        "score",
        &second,
        0,
        0,
        json!({"rows": 1200, "rejected": 0, "seconds": 1.0}),
    )
    .await;
    finished_shard(
        &pods,
        "score",
        &second,
        1,
        1,
        json!({"rows": 16, "rejected": 0, "seconds": 0.5, "kind": "input",
        "error": "file:///var/lib/sluice/batch/in/b.csv: row 17: expected 4 columns, found 3"}),
    )
    .await;
    end_job(
        &jobs,
        &second,
        json!({
            "active": 0, "ready": 0, "succeeded": 1, "failed": 4, "completedIndexes": "0", "failedIndexes": "1",
            "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": "FailedIndexes", "message": "Job has failed indexes", "lastProbeTime": "2026-01-15T09:01:00Z", "lastTransitionTime": "2026-01-15T09:01:00Z"},
                {"type": "Failed", "status": "True", "reason": "FailedIndexes", "message": "Job has failed indexes", "lastProbeTime": "2026-01-15T09:01:00Z", "lastTransitionTime": "2026-01-15T09:01:00Z"}
            ],
        }),
    )
    .await;
    let failed = latest_run(&typed, "score", "the rerun failed", |r| {
        r.job == second && r.phase == BatchPhase::Failed
    })
    .await;
    assert_eq!(failed.shards_failed, 1);
    assert_eq!(failed.failures[0].shard, 1);
    assert_eq!(failed.failures[0].kind, "input");
    assert!(failed.message.contains("shard 1 (input): file:///var/lib/sluice/batch/in/b.csv: row 17: expected 4 columns, found 3"), "{}", failed.message);
    let batch = typed.get("score").await.unwrap();
    assert_eq!(
        batch.status.as_ref().unwrap().phase,
        Some(BatchPhase::Failed)
    );
    assert_eq!(batch.status.as_ref().unwrap().history.len(), 2);
    assert_eq!(condition(&batch, "Succeeded").unwrap().1, "RunFailed");
    event(
        &client,
        ns,
        "score",
        "Warning",
        "RunFailed",
        "row 17: expected 4 columns",
    )
    .await;
}

/// A schedule makes a CronJob; suspend reaches it; its runs show in status;
/// removing the schedule deletes it. A bad schedule is a condition and an Event.
pub async fn scheduled_runs(client: Client) {
    let ns = "batch-cron";
    namespace(&client, ns).await;
    let typed: Api<BatchInference> = Api::namespaced(client.clone(), ns);
    let cron_jobs: Api<CronJob> = Api::namespaced(client.clone(), ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let api = batches(&client, ns);
    api.create(
        &PostParams::default(),
        &batch_manifest(
            "nightly",
            json!({
                "model": {"storageUri": "s3://models/fraud/model.onnx"},
                "input": "s3://data/in/",
                "output": "s3://predictions/nightly",
                "schedule": "0 2 * * *",
                "timeZone": "Europe/Paris",
                "parallelism": 3,
            }),
        ),
    )
    .await
    .unwrap();
    let uid = typed.get("nightly").await.unwrap().metadata.uid.unwrap();
    let cron = eventually("the CronJob is created", || async {
        cron_jobs.get_opt("nightly").await.ok()?
    })
    .await;
    let spec = cron.spec.as_ref().unwrap();
    assert_eq!(spec.schedule, "0 2 * * *");
    assert_eq!(spec.time_zone.as_deref(), Some("Europe/Paris"));
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    assert_eq!(spec.suspend, Some(false));
    assert_eq!(cron.metadata.owner_references.as_ref().unwrap()[0].uid, uid);
    let job_spec = spec.job_template.spec.as_ref().unwrap();
    assert_eq!(job_spec.completions, Some(3));
    let status = eventually("status waits for the first run", || async {
        let status = typed.get("nightly").await.ok()?.status?;
        (status.phase == Some(BatchPhase::Pending)).then_some(status)
    })
    .await;
    assert!(
        status
            .message
            .unwrap()
            .contains("first run on the schedule \"0 2 * * *\"")
    );

    // suspend reaches the CronJob.
    api.patch(
        "nightly",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": true}})),
    )
    .await
    .unwrap();
    eventually("the CronJob is suspended", || async {
        let cron = cron_jobs.get("nightly").await.ok()?;
        (cron.spec?.suspend == Some(true)).then_some(())
    })
    .await;
    event(
        &client,
        ns,
        "nightly",
        "Normal",
        "Suspended",
        "spec.suspend",
    )
    .await;
    api.patch(
        "nightly",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await
    .unwrap();

    // A run the CronJob controller made (a Job it owns, from the template).
    let cron = cron_jobs.get("nightly").await.unwrap();
    let template = cron.spec.unwrap().job_template;
    let run: Job = serde_json::from_value(json!({
        "metadata": {"name": "nightly-29480000", "labels": template.metadata.as_ref().unwrap().labels,
                     "annotations": template.metadata.as_ref().unwrap().annotations,
                     "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly",
                                          "uid": cron.metadata.uid, "controller": true}]},
        "spec": template.spec,
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &run).await.unwrap();
    end_job(
        &jobs,
        "nightly-29480000",
        json!({"startTime": "2026-01-16T01:00:00Z", "active": 3, "ready": 3}),
    )
    .await;
    let run = latest_run(
        &typed,
        "nightly",
        "the scheduled run shows in status",
        |r| r.job == "nightly-29480000" && r.phase == BatchPhase::Running,
    )
    .await;
    assert_eq!(run.output, "s3://predictions/nightly/nightly-29480000");
    assert_eq!(run.completions, "0/3");

    // A bad schedule: the condition and a Warning say which field.
    api.patch(
        "nightly",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"schedule": "61 * * * *"}})),
    )
    .await
    .unwrap();
    let (_, reason, message) = eventually("Reconciled turns False", || async {
        let c = condition(&typed.get("nightly").await.ok()?, "Reconciled")?;
        (c.0 == "False").then_some(c)
    })
    .await;
    assert_eq!(reason, "InvalidSpec");
    assert!(
        message.contains("spec.schedule \"61 * * * *\": minute field"),
        "{message}"
    );
    event(
        &client,
        ns,
        "nightly",
        "Warning",
        "InvalidSpec",
        "minute field",
    )
    .await;
    assert_eq!(
        cron_jobs
            .get("nightly")
            .await
            .unwrap()
            .spec
            .unwrap()
            .schedule,
        "0 2 * * *",
        "an invalid spec changes nothing"
    );

    // No schedule: the CronJob goes, and the spec runs once.
    api.patch(
        "nightly",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"schedule": null, "timeZone": null}})),
    )
    .await
    .unwrap();
    eventually("the CronJob is deleted", || async {
        cron_jobs
            .get_opt("nightly")
            .await
            .ok()?
            .is_none_or(|c| c.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
    eventually("a one-time run is made", || async {
        jobs_of(&jobs, "nightly")
            .await
            .iter()
            .any(|j| {
                j.owner_references()
                    .iter()
                    .any(|o| o.kind == "BatchInference")
            })
            .then_some(())
    })
    .await;
}

/// A BatchInference that names a missing InferenceService says so; once the
/// InferenceService exists, the run uses its model.
pub async fn inference_service_reference(client: Client) {
    let ns = "batch-ref";
    namespace(&client, ns).await;
    let typed: Api<BatchInference> = Api::namespaced(client.clone(), ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    batches(&client, ns)
        .create(
            &PostParams::default(),
            &batch_manifest(
                "rescore",
                json!({
                    "inferenceServiceRef": {"name": "fraud"},
                    "input": "s3://data/in/",
                    "output": "s3://predictions/rescore",
                }),
            ),
        )
        .await
        .unwrap();
    let (_, reason, message) = eventually(
        "Reconciled says the InferenceService is missing",
        || async {
            let c = condition(&typed.get("rescore").await.ok()?, "Reconciled")?;
            (c.0 == "False").then_some(c)
        },
    )
    .await;
    assert_eq!(reason, "InferenceServiceNotFound");
    assert!(
        message.contains("InferenceService \"fraud\" not found in namespace batch-ref"),
        "{message}"
    );
    assert_eq!(
        typed.get("rescore").await.unwrap().status.unwrap().phase,
        Some(BatchPhase::Failed)
    );
    event(
        &client,
        ns,
        "rescore",
        "Warning",
        "InferenceServiceNotFound",
        "\"fraud\"",
    )
    .await;
    assert!(jobs_of(&jobs, "rescore").await.is_empty());

    dynamic(&client, ns)
        .create(
            &PostParams::default(),
            &manifest(
                "fraud",
                json!({"model": {"storageUri": "s3://models/fraud/7/model.onnx", "credentialsSecret": "models"}}),
            ),
        )
        .await
        .unwrap();
    let isvcs: Api<InferenceService> = Api::namespaced(client.clone(), ns);
    assert!(isvcs.get("fraud").await.is_ok());
    let job = eventually("the InferenceService's arrival starts the run", || async {
        jobs_of(&jobs, "rescore").await.into_iter().next()
    })
    .await;
    assert_eq!(
        job.annotations()["serving.sluice.dev/model"],
        "s3://models/fraud/7/model.onnx"
    );
    let fetch = &job
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .init_containers
        .unwrap()[0];
    assert_eq!(
        fetch.env_from.as_ref().unwrap()[0]
            .secret_ref
            .as_ref()
            .unwrap()
            .name,
        "models"
    );
    eventually("Reconciled turns True", || async {
        let c = condition(&typed.get("rescore").await.ok()?, "Reconciled")?;
        (c.0 == "True").then_some(())
    })
    .await;
}
