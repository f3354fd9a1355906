# Batch inference through the operator (sourced by e2e/operator/e2e.sh after
# install_operator). The seed's nightly job, the Sluice way:
#
# - the cluster's S3 server (e2e/s3/s3.sh: s3s-fs, which checks every request's
#   signature) holds the model and eight CSV files of input;
# - a BatchInference with a schedule (the next minute) makes a CronJob, whose run
#   is an Indexed Job of 4 shards reading s3:// and writing s3://, with the
#   credentials from a Secret;
# - once shard 1 has published a part, its pod is deleted mid-run; the Job starts
#   another, which resumes after the published parts;
# - every input row is in the output exactly once (checked by row ids), the
#   resumed shard says it kept parts, and status shows the run: Succeeded, 4/4
#   shards, the rows, the output folder, one run in the history.
#
# Then one-time runs over file:// (the node's own folder) and over pvc:// (a
# claim on a hostPath volume), each with a bad row that lands in _rejects/ with
# its reason.
#
# Along the way, Argo CD's health check of BatchInference (integrations/argocd,
# run by Argo CD's Lua VM through gitops.sh's expect_health_of) must call each
# live state what docs/gitops.md says: a schedule is Healthy while it waits,
# runs and after a run, Degraded after a failed run and Suspended when held; a
# one-time run is Progressing while pending (a pod no node takes), running,
# stale or not yet seen by the operator, Suspended when held, Healthy when done,
# Degraded when it failed or names no InferenceService that exists.
# SLUICE_CAPTURE_HEALTH=1 writes each object into the check's testdata/.

BATCH_NAME=nightly
BATCH_FILES=8
BATCH_ROWS=2000
S3="$REPO_ROOT/e2e/s3/s3.sh"

# batch_jsonpath NAME PATH: one field of a BatchInference.
batch_jsonpath() { "$KUBECTL" get batchinference "$1" -o "jsonpath=$2" 2>/dev/null; }

# batch_wait SECONDS WHAT CMD...: wait_until, listing what a BatchInference makes.
batch_wait() { wait_until "$1" "$2" batchinference,cronjob,job,pod "${@:3}"; }

# batch_apply NAME MODEL INPUT OUTPUT [SPEC...]: applies the BatchInference NAME
# in default, of the model at the URI MODEL, from INPUT to OUTPUT (URIs), rows
# named by their `id` column, one ORT thread a shard, each pod asking for
# ${BATCH_CPU:-100m} of CPU, with the extra spec lines SPEC (YAML, as `key: value`).
batch_apply() {
    local name=$1 model=$2 input=$3 output=$4 extra
    extra=$(printf '  %s\n' "${@:5}")
    "$KUBECTL" apply -f - >/dev/null <<YAML
apiVersion: serving.sluice.dev/v1alpha1
kind: BatchInference
metadata: {name: $name, namespace: default}
spec:
  model: {storageUri: "$model"}
  input: $input
  output: $output
  idColumn: id
$extra
  runtime:
    threads: 1
    resources:
      requests: {cpu: ${BATCH_CPU:-100m}, memory: 128Mi}
      limits: {memory: 1Gi}
YAML
}

# batch_inputs DIR: the input files, each row with an id that names it, for the
# 16-feature models; prints nothing.
batch_inputs() {
    python3 - "$1" "$BATCH_FILES" "$BATCH_ROWS" <<'PY'
import random, sys
folder, files, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(17)
for f in range(files):
    with open(f"{folder}/day-{f:02d}.csv", "w") as out:
        out.write("id," + ",".join(f"f{i}" for i in range(16)) + "\n")
        for r in range(rows):
            out.write(f"e{f}-{r}," + ",".join(f"{random.uniform(-2, 2):.4f}" for _ in range(16)) + "\n")
PY
}

# batch_check_output DIR EXPECTED: every CSV part under DIR read; each id in
# exactly one row, EXPECTED ids in all.
batch_check_output() {
    python3 - "$1" "$2" <<'PY'
import csv, glob, sys
folder, expected = sys.argv[1], int(sys.argv[2])
seen = {}
for part in sorted(glob.glob(f"{folder}/part-*.csv")):
    with open(part) as f:
        for row in csv.DictReader(f):
            key = (row["_source"], row["_row"])
            if key in seen:
                sys.exit(f"{key} is in {seen[key]} and {part}")
            seen[key] = part
            source_index = int(row["_source"][4:6])
            if row["id"] != f"e{source_index}-{row['_row']}":
                sys.exit(f"{part}: row {key} carries id {row['id']}")
if len(seen) != expected:
    sys.exit(f"{len(seen)} rows in the output, {expected} expected")
print(f"{len(seen)} rows, each once")
PY
}

batch_scheduled_e2e() {
    local tmp job pod deleted=""
    tmp=$(mktemp -d)
    "$S3" start >/dev/null
    "$KUBECTL" create secret generic batch-s3 --from-env-file="$REPO_ROOT/.cluster/s3/env" \
        --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
    for bucket in models data predictions; do "$S3" mb "$bucket"; done
    # `slow` costs about 30 ms a run whatever the batch: a shard of two files runs
    # for a while, long enough to be killed halfway.
    "$S3" put "$MODELS_DIR/slow/1/model.onnx" models/slow/1/model.onnx
    batch_inputs "$tmp"
    for file in "$tmp"/day-*.csv; do "$S3" put "$file" "data/nightly/in/$(basename "$file")"; done

    # The next whole minute at least 20 s away, in the controller manager's zone (UTC).
    local at
    at=$(date -u -d "@$(( ($(date +%s) + 80) / 60 * 60 ))" '+%M %H')
    read -r minute hour <<<"$at"
    say "batch: a BatchInference scheduled at $hour:$minute UTC over s3:// with 4 shards"
    say "batch: and nightly-broken at the same time, whose model takes 4 features, not 16"
    local schedule="$((10#$minute)) $((10#$hour)) * * *"
    batch_apply nightly-broken "file://$MODELS_DIR/iris/1/model.onnx" s3://data/nightly/in s3://predictions/broken \
        "credentialsSecret: batch-s3" "schedule: \"$schedule\"" "retries: 0"
    batch_apply "$BATCH_NAME" s3://models/slow/1/model.onnx s3://data/nightly/in s3://predictions/nightly \
        "credentialsSecret: batch-s3" "schedule: \"$schedule\"" "batchSize: 16" "rowsPerPart: 160" \
        "parallelism: 4" "retries: 3"
    expect_health_of BatchInference "$BATCH_NAME" Healthy healthy_scheduled_waiting status.phase Pending
    batch_wait 150 "the scheduled run's Job" \
        bash -c "[[ -n \$('$KUBECTL' get jobs -l serving.sluice.dev/batchinference=$BATCH_NAME -o name 2>/dev/null) ]]"
    job=$("$KUBECTL" get jobs -l "serving.sluice.dev/batchinference=$BATCH_NAME" -o jsonpath='{.items[0].metadata.name}')
    say "batch: run $job started"
    expect_health_of BatchInference "$BATCH_NAME" Healthy healthy_scheduled_running status.phase Running

    # Shard 1's pod, once its first part is out and before it is done.
    local manifest="predictions/nightly/$job/_manifest/shard-00001-of-00004.json"
    batch_wait 180 "shard 1's first part" \
        bash -c "'$S3' get '$manifest' - | python3 -c 'import json,sys; m=json.load(sys.stdin); p=sum(len(f[\"parts\"]) for f in m[\"files\"].values()); sys.exit(0 if p >= 1 and not m[\"complete\"] else 1)'"
    pod=$("$KUBECTL" get pods -l "job-name=$job,batch.kubernetes.io/job-completion-index=1" \
        --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.name}')
    [[ -n $pod ]] || { say "batch: no running pod for shard 1"; return 1; }
    "$KUBECTL" delete pod "$pod" --wait=false >/dev/null
    deleted=$pod
    say "batch: deleted shard 1's pod $deleted mid-run"

    batch_wait 300 "the run to succeed" \
        bash -c "[[ \$('$KUBECTL' get batchinference $BATCH_NAME -o jsonpath='{.status.latestRun.phase}') == Succeeded ]]"
    local rows shards phase output history
    rows=$(batch_jsonpath "$BATCH_NAME" '{.status.latestRun.rows}')
    shards=$(batch_jsonpath "$BATCH_NAME" '{.status.latestRun.completions}')
    output=$(batch_jsonpath "$BATCH_NAME" '{.status.latestRun.output}')
    history=$(batch_jsonpath "$BATCH_NAME" '{.status.history[*].job}')
    phase=$(batch_jsonpath "$BATCH_NAME" '{.status.phase}')
    say "batch: status: phase $phase, shards $shards, rows $rows, output $output, history [$history]"
    [[ $rows == $((BATCH_FILES * BATCH_ROWS)) ]] || { say "batch: status counts $rows rows"; return 1; }
    [[ $shards == 4/4 ]] || { say "batch: status counts shards $shards"; return 1; }
    [[ $output == "s3://predictions/nightly/$job" ]] || { say "batch: status names output $output"; return 1; }
    [[ " $history " == *" $job "* ]] || { say "batch: $job is not in status.history"; return 1; }
    expect_health_of BatchInference "$BATCH_NAME" Healthy healthy_scheduled_succeeded status.phase Succeeded
    expect_health_of BatchInference nightly-broken Degraded degraded_scheduled_failed status.phase Failed

    # The shard that replaced the deleted pod kept the parts it found.
    local resumed
    resumed=$("$KUBECTL" get pods -l "job-name=$job,batch.kubernetes.io/job-completion-index=1" \
        -o jsonpath='{range .items[*]}{.status.containerStatuses[?(@.name=="batch")].state.terminated.message}{"\n"}{end}' |
        python3 -c 'import json,sys; print(max([json.loads(l).get("resumedParts", 0) for l in sys.stdin if l.strip()] or [0]))')
    say "batch: the replacement of shard 1 resumed after $resumed published parts"
    ((resumed >= 1)) || { say "batch: shard 1 did not resume"; return 1; }

    mkdir -p "$tmp/out"
    local key
    for key in $("$S3" ls predictions "nightly/$job/"); do
        [[ $key == */part-*.csv ]] && "$S3" get "predictions/$key" "$tmp/out/$(basename "$key")"
    done
    batch_check_output "$tmp/out" $((BATCH_FILES * BATCH_ROWS)) >&2 || return 1
    "$KUBECTL" patch batchinference "$BATCH_NAME" --type merge -p '{"spec":{"suspend":true}}' >/dev/null
    expect_health_of BatchInference "$BATCH_NAME" Suspended suspended_scheduled
    "$KUBECTL" delete batchinference "$BATCH_NAME" nightly-broken --wait=false >/dev/null
    rm -rf "$tmp"
}

# batch_local_e2e NAME INPUT OUTPUT FOLDER: a one-time BatchInference over
# INPUT and OUTPUT (URIs for FOLDER/in and FOLDER/out on the node), two files
# and a bad row; checks the status, the reject's reason and every row once.
batch_local_e2e() {
    local name=$1 input=$2 output=$3 folder=$4
    rm -rf "$folder"
    mkdir -p "$folder/in" "$folder/out"
    BATCH_FILES=2 BATCH_ROWS=300 batch_inputs "$folder/in"
    echo "e9-0,1,2,3" >>"$folder/in/day-01.csv"
    say "batch: a one-time BatchInference from $input to $output with one bad row"
    batch_apply "$name" "file://$MODELS_DIR/mlp/1/model.onnx" "$input" "$output" \
        "maxRejectRatio: 0.01" "parallelism: 2"
    batch_wait 180 "the run of $name to succeed" \
        bash -c "[[ \$('$KUBECTL' get batchinference $name -o jsonpath='{.status.latestRun.phase}') == Succeeded ]]"
    local job rows rejected
    job=$(batch_jsonpath "$name" '{.status.latestRun.job}')
    rows=$(batch_jsonpath "$name" '{.status.latestRun.rows}')
    rejected=$(batch_jsonpath "$name" '{.status.latestRun.rejected}')
    say "batch: run $job: $rows rows, $rejected rejected"
    [[ $rows == 600 && $rejected == 1 ]] || { say "batch: expected 600 rows and 1 rejected"; return 1; }
    grep -q '"reason":"has 4 fields, the header has 17"' "$folder/out/$job"/_rejects/*.jsonl ||
        { say "batch: the rejected row's reason is not in _rejects/"; return 1; }
    batch_check_output "$folder/out/$job" 600 >&2 || return 1
    "$KUBECTL" delete batchinference "$name" --wait=true >/dev/null
}

# A statically provisioned claim on a hostPath volume, as docs/local-cluster.md
# describes; both go after the run (a Retained volume would not bind again).
BATCH_PV_PATH=/opt/sluice/batch-pv
batch_claim() {
    cat <<YAML
apiVersion: v1
kind: PersistentVolume
metadata: {name: batch-data}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  hostPath: {path: $BATCH_PV_PATH, type: DirectoryOrCreate}
  claimRef: {namespace: default, name: batch-data}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: batch-data, namespace: default}
spec:
  storageClassName: ""
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
YAML
}

batch_pvc_e2e() {
    batch_claim | "$KUBECTL" apply -f - >/dev/null
    batch_wait 60 "the claim to bind" \
        bash -c "[[ \$('$KUBECTL' get pvc batch-data -o jsonpath='{.status.phase}') == Bound ]]"
    batch_local_e2e on-claim pvc://batch-data/in pvc://batch-data/out "$BATCH_PV_PATH"
    batch_claim | "$KUBECTL" delete -f - --wait=true >/dev/null
}

# The one-time states of Argo CD's health of BatchInference, each on a live object.
batch_health_e2e() {
    local folder=/opt/sluice/batch-health
    rm -rf "$folder"
    mkdir -p "$folder/in" "$folder/bad"
    BATCH_FILES=2 BATCH_ROWS=300 batch_inputs "$folder/in"
    printf 'id,f0,f1\ne0-0,1,2\n' >"$folder/bad/day-00.csv"

    # A run of `slow` (about 30 ms a batch) one row a batch: 10 s a shard, time
    # to see it run, hold it and let it go on.
    say "batch health: a one-time run, held with spec.suspend and let go"
    batch_apply running "file://$MODELS_DIR/slow/1/model.onnx" "file://$folder/in" "file://$folder/out" \
        "parallelism: 2" "batchSize: 1"
    expect_health_of BatchInference running Progressing progressing_running status.phase Running
    "$KUBECTL" patch batchinference running --type merge -p '{"spec":{"suspend":true}}' >/dev/null
    expect_health_of BatchInference running Suspended suspended status.latestRun.phase Suspended
    "$KUBECTL" patch batchinference running --type merge -p '{"spec":{"suspend":false}}' >/dev/null
    expect_health_of BatchInference running Healthy healthy_succeeded status.phase Succeeded

    say "batch health: a run whose rows do not fit the model, with no retry"
    batch_apply broken "file://$MODELS_DIR/mlp/1/model.onnx" "file://$folder/bad" "file://$folder/out" \
        "parallelism: 2" "retries: 0"
    expect_health_of BatchInference broken Degraded degraded_failed_run status.phase Failed

    say "batch health: a BatchInference naming an InferenceService that does not exist"
    "$KUBECTL" apply -f - >/dev/null <<YAML
apiVersion: serving.sluice.dev/v1alpha1
kind: BatchInference
metadata: {name: orphan, namespace: default}
spec:
  inferenceServiceRef: {name: absent}
  input: file://$folder/in
  output: file://$folder/orphan-out
YAML
    expect_health_of BatchInference orphan Degraded degraded_inference_service_not_found \
        status.conditions.Reconciled.status False

    # Pending: its pods ask for more CPU than the node has. Then, while the
    # operator is stopped, Git changes that spec (a stale status) and adds a
    # BatchInference (no status yet).
    say "batch health: a run no node can take, then specs the operator has not seen"
    BATCH_CPU=64 batch_apply pending "file://$MODELS_DIR/mlp/1/model.onnx" "file://$folder/in" "file://$folder/out"
    expect_health_of BatchInference pending Progressing progressing_pending status.phase Pending
    unseen_batch_specs() {
        "$KUBECTL" patch batchinference pending --type merge -p '{"spec":{"historyLimit":5}}' >/dev/null
        expect_health_of BatchInference pending Progressing progressing_stale_generation &&
            batch_apply unseen "file://$MODELS_DIR/mlp/1/model.onnx" "file://$folder/in" "file://$folder/out" &&
            expect_health_of BatchInference unseen Progressing progressing_no_status status ''
    }
    operator_paused unseen_batch_specs

    "$KUBECTL" delete batchinference running broken orphan pending unseen --wait=true >/dev/null
    rm -rf "$folder"
}

batch_e2e() {
    batch_scheduled_e2e
    batch_health_e2e
    batch_local_e2e local-files file:///opt/sluice/batch-e2e/in file:///opt/sluice/batch-e2e/out /opt/sluice/batch-e2e
    batch_pvc_e2e
}
