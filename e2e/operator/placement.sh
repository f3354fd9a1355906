#!/usr/bin/env bash
# Edge placement through the operator (sourced by e2e/operator/e2e.sh after
# install_operator): the node is labelled an edge node; an InferenceService with
# spec.placement.mode PerNode and a nodeSelector matching it becomes Ready as a
# DaemonSet with one pod on the node, its Service has internalTrafficPolicy
# Local, and a request through the Service's ClusterIP answers. A new revision
# runs as a second DaemonSet beside the first (a blue-green preview on every
# node); once promoted, the Service switches and the old DaemonSet goes. The API
# server refuses PerNode with a canary. A selector that matches no node says so
# in status (NodesMatched=False NoMatchingNodes per node, Available=False
# Unschedulable for a replica count) and serves as soon as a node is labelled to
# match.

EDGE_LABEL=sluice.dev/edge
ZONE_LABEL=sluice.dev/zone

placement_isvc() { # NAME MODE NODE_SELECTOR
    cat <<YAML
apiVersion: serving.sluice.dev/v1alpha1
kind: InferenceService
metadata: {name: $1, namespace: default}
spec:
  minReplicas: 1
  model: {storageUri: "file://$MODELS_DIR/iris/1/model.onnx"}
  placement:
    mode: $2
    nodeSelector: {$3}
  rollout:
    strategy: BlueGreen
    blueGreen: {previewSeconds: 5, postPromotionSeconds: 5, scaleDownDelaySeconds: 2}
YAML
}

# placement_wait SECONDS WHAT CMD...: wait_until, listing what placement makes.
placement_wait() { wait_until "$1" "$2" isvc,daemonsets,deployments,pods "${@:3}"; }

# placement_condition ISVC TYPE: "status reason" of one condition.
placement_condition() {
    "$KUBECTL" get isvc "$1" -o jsonpath="{.status.conditions[?(@.type==\"$2\")].status} {.status.conditions[?(@.type==\"$2\")].reason}"
}

placement_infer() { # NAME: one inference through the Service's ClusterIP; prints the answer
    local ip
    ip=$("$KUBECTL" get svc "$1" -o jsonpath='{.spec.clusterIP}')
    curl -fsS --connect-timeout 2 --max-time 10 --retry 5 --retry-all-errors \
        -H 'Content-Type: application/json' -d "$(reference_request)" \
        "http://$ip:8080/v2/models/$1/infer"
}

placement_e2e() {
    local started node revision ds policy answer new_revision pods desired ready message phase refused
    started=$(date +%s)
    node=${SLUICE_NODE_NAME:-sluice-node}
    EDGE_ISVC=$(placement_isvc edge PerNode "$EDGE_LABEL: \"true\"")
    NOWHERE_ISVC=$(placement_isvc edge-nowhere PerNode "$ZONE_LABEL: nowhere")
    UNPLACED_ISVC=$(placement_isvc edge-unplaced Replicas "$ZONE_LABEL: nowhere")
    PLACEMENT_NODE=$node
    trap 'cleanup; for isvc in "$EDGE_ISVC" "$NOWHERE_ISVC" "$UNPLACED_ISVC"; do echo "$isvc" | "$KUBECTL" delete -f - --ignore-not-found --wait=false >/dev/null 2>&1 || true; done; "$KUBECTL" label node "$PLACEMENT_NODE" "$EDGE_LABEL-" "$ZONE_LABEL-" >/dev/null 2>&1 || true' EXIT

    # The API server itself refuses one pod per node with the default canary.
    refused=$(placement_isvc edge PerNode "$EDGE_LABEL: \"true\"" | sed '/^  rollout:/,$d' |
        "$KUBECTL" apply -f - 2>&1 >/dev/null) && { say "FAIL: PerNode with a canary was accepted"; exit 1; }
    [[ $refused == *"spec.placement.mode PerNode needs spec.rollout.strategy BlueGreen"* ]] || {
        say "FAIL: PerNode with a canary refused with: $refused"; exit 1; }
    say "the API server refuses PerNode with a canary: ${refused:0:160}"

    "$KUBECTL" label node "$node" "$EDGE_LABEL=true" --overwrite >/dev/null
    echo "$EDGE_ISVC" | "$KUBECTL" apply -f - >/dev/null
    "$KUBECTL" wait isvc/edge --for=condition=Ready --timeout=240s >/dev/null || {
        "$KUBECTL" describe isvc edge >&2; exit 1; }
    revision=$("$KUBECTL" get isvc edge -o jsonpath='{.status.revision}')
    ds="edge-$revision"
    read -r desired ready <<<"$("$KUBECTL" get daemonset "$ds" -o jsonpath='{.status.desiredNumberScheduled} {.status.numberReady}')"
    [[ $desired == 1 && $ready == 1 ]] || {
        say "FAIL: DaemonSet $ds schedules $desired pods, $ready ready (want 1 on $node)"; exit 1; }
    [[ -z $("$KUBECTL" get deployments -l serving.sluice.dev/inferenceservice=edge -o name) ]] || {
        say "FAIL: a PerNode InferenceService has a Deployment"; exit 1; }
    pods=$("$KUBECTL" get pods -l serving.sluice.dev/inferenceservice=edge -o jsonpath='{range .items[*]}{.spec.nodeName}/{.spec.nodeSelector.sluice\.dev/edge} {end}')
    [[ $pods == "$node/true " ]] || { say "FAIL: edge pods on nodes/selectors '$pods'"; exit 1; }
    policy=$("$KUBECTL" get svc edge -o jsonpath='{.spec.internalTrafficPolicy}')
    [[ $policy == Local ]] || { say "FAIL: Service edge has internalTrafficPolicy '$policy'"; exit 1; }
    [[ $(placement_condition edge NodesMatched) == "True NodesMatched" ]] || {
        say "FAIL: NodesMatched is '$(placement_condition edge NodesMatched)'"; exit 1; }
    [[ $("$KUBECTL" get isvc edge -o jsonpath='{.status.autoscaling.signal} {.status.autoscaling.desiredReplicas}') == "PerNode 1" ]] || {
        say "FAIL: status.autoscaling is $("$KUBECTL" get isvc edge -o jsonpath='{.status.autoscaling}')"; exit 1; }
    answer=$(placement_infer edge)
    [[ $answer == *'"outputs"'* ]] || { say "FAIL: no outputs from edge: $answer"; exit 1; }
    say "PerNode: isvc edge Ready in $(($(date +%s) - started))s as DaemonSet $ds (1 of 1 matching nodes ready, pod on $node), Service internalTrafficPolicy Local, autoscaling signal PerNode; the ClusterIP answered: ${answer:0:120}"

    # A new revision per node: a second DaemonSet beside the first, the Service
    # still on the stable one until the promotion switches it.
    "$KUBECTL" patch isvc edge --type merge -p '{"spec":{"runtime":{"env":[{"name":"PLACEMENT_E2E","value":"2"}]}}}' >/dev/null
    placement_wait 30 "a new revision of edge" \
        bash -c "[[ \$('$KUBECTL' get isvc edge -o jsonpath='{.status.revision}') != '$revision' ]]"
    new_revision=$("$KUBECTL" get isvc edge -o jsonpath='{.status.revision}')
    placement_wait 120 "the preview DaemonSet edge-$new_revision ready beside edge-$revision" \
        bash -c "[[ \$('$KUBECTL' get daemonset edge-$new_revision -o jsonpath='{.status.numberReady}') == 1 && \$('$KUBECTL' get daemonset edge-$revision -o jsonpath='{.status.numberReady}') == 1 ]]"
    [[ $("$KUBECTL" get svc edge -o jsonpath='{.spec.selector.serving\.sluice\.dev/revision}') == "$revision" ]] || {
        say "FAIL: the Service left the stable revision during the preview"; exit 1; }
    say "revision $new_revision previews as DaemonSet edge-$new_revision beside edge-$revision (2 pods on $node); the Service stays on $revision"
    "$KUBECTL" annotate isvc edge serving.sluice.dev/rollout=promote --overwrite >/dev/null
    placement_wait 120 "edge promoted to $new_revision with the old DaemonSet gone" \
        bash -c "[[ \$('$KUBECTL' get isvc edge -o jsonpath='{.status.stableRevision}') == '$new_revision' && -z \$('$KUBECTL' get daemonset edge-$revision -o name --ignore-not-found) ]]"
    "$KUBECTL" wait isvc/edge --for=condition=Ready --timeout=60s >/dev/null
    answer=$(placement_infer edge)
    [[ $answer == *'"outputs"'* ]] || { say "FAIL: no outputs from edge after the promotion: $answer"; exit 1; }
    say "promoted: status.history ends $("$KUBECTL" get isvc edge -o jsonpath='{.status.history[-1].outcome}'), DaemonSet edge-$revision deleted, the ClusterIP answers from edge-$new_revision"

    # Selectors that match no node: said in status, served once a node matches.
    echo "$NOWHERE_ISVC" | "$KUBECTL" apply -f - >/dev/null
    echo "$UNPLACED_ISVC" | "$KUBECTL" apply -f - >/dev/null
    placement_wait 60 "edge-nowhere reporting NodesMatched=False NoMatchingNodes" \
        bash -c "[[ \$('$KUBECTL' get isvc edge-nowhere -o jsonpath='{.status.conditions[?(@.type==\"NodesMatched\")].reason}') == NoMatchingNodes ]]"
    message=$("$KUBECTL" get isvc edge-nowhere -o jsonpath='{.status.message}')
    phase=$("$KUBECTL" get isvc edge-nowhere -o jsonpath='{.status.phase}')
    [[ $message == *"no node matches spec.placement (nodeSelector $ZONE_LABEL=nowhere)"* && $phase == Failed ]] || {
        say "FAIL: edge-nowhere says phase $phase: $message"; exit 1; }
    say "no matching node, per node: phase $phase, Ready=False: $message"
    placement_wait 60 "edge-unplaced reporting Available=False Unschedulable" \
        bash -c "[[ \$('$KUBECTL' get isvc edge-unplaced -o jsonpath='{.status.conditions[?(@.type==\"Available\")].reason}') == Unschedulable ]]"
    say "no matching node, replica count: Ready=False: $("$KUBECTL" get isvc edge-unplaced -o jsonpath='{.status.message}')"
    "$KUBECTL" label node "$node" "$ZONE_LABEL=nowhere" --overwrite >/dev/null
    "$KUBECTL" wait isvc/edge-nowhere isvc/edge-unplaced --for=condition=Ready --timeout=120s >/dev/null || {
        "$KUBECTL" describe isvc edge-nowhere edge-unplaced >&2; exit 1; }
    say "once $node is labelled $ZONE_LABEL=nowhere, both are Ready"

    for isvc in "$EDGE_ISVC" "$NOWHERE_ISVC" "$UNPLACED_ISVC"; do echo "$isvc" | "$KUBECTL" delete -f - --wait=true >/dev/null; done
    "$KUBECTL" label node "$node" "$EDGE_LABEL-" "$ZONE_LABEL-" >/dev/null
    say "placement scenario passed in $(($(date +%s) - started))s"
}
