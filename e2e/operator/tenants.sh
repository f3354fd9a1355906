# Two tenants on one cluster (sourced by e2e.sh; needs lib.sh): team-a and team-b
# each get Kubernetes' own `edit` role in their namespace, which Sluice's aggregated
# ClusterRoles (config/rbac/aggregate_roles.yaml) extend to InferenceServices and
# BatchInferences; an auditor gets `view` in team-a. Everything below is checked by
# the real API server's RBAC, as the users themselves (kubectl --as).
#
# Checked: alice (team-a edit) creates, reads, commands and calls her model; she
# cannot read, change, command or call team-b's. carol (team-a view) reads team-a's
# model and its status, and can change nothing.
#
# Calls that do not go through the API server (a pod of team-a sending to team-b's
# Service) are held by each model's API keys: every team keeps its keys in a Secret
# of its own namespace, which the other team cannot read, and a model answers only
# the keys of its own Secret. (NetworkPolicy from spec.security.allowedSources
# would also refuse the connection, but this cluster's node enforces none:
# docs/local-cluster.md.)

# as USER ARGS...: kubectl as USER (impersonated by the cluster admin).
as() {
    local user=$1
    shift
    "$KUBECTL" --as="$user" "$@"
}

# refused WHAT CMD...: CMD must fail with Forbidden.
refused() {
    local what=$1 out
    shift
    if out=$("$@" 2>&1); then
        say "FAIL: $what was allowed: $out"
        return 1
    fi
    [[ $out == *[Ff]orbidden* ]] || { say "FAIL: $what failed without Forbidden: $out"; return 1; }
}

# new_api_key: a random API key, as docs/security.md makes one.
new_api_key() { python3 -c 'import secrets; print("sk-" + secrets.token_hex(24))'; }

# keys_yaml NAME KEY: a keys.yaml that lets KEY, called NAME, call the model `model`.
keys_yaml() {
    printf 'keys:\n  - name: %s\n    sha256: %s\n    models: [model]\n' \
        "$1" "$(printf %s "$2" | sha256sum | cut -d' ' -f1)"
}

# expect_status CODE WHAT URL [CURL ARGS...]: an inference request with the
# reference inputs to URL must be answered CODE.
expect_status() {
    local want=$1 what=$2 url=$3 got
    got=$(curl -sS -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
        -d "$(reference_request)" "${@:4}" "$url")
    [[ $got == "$want" ]] || { say "FAIL: $what was answered $got, not $want"; return 1; }
}

tenants_e2e() {
    local ns user key tenant
    "$KUBECTL" apply -f "$REPO_ROOT/config/rbac/aggregate_roles.yaml" >/dev/null
    for ns in team-a team-b; do
        "$KUBECTL" create namespace "$ns" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
    done
    "$KUBECTL" -n team-a create rolebinding alice-edit --clusterrole=edit --user=alice --dry-run=client -o yaml |
        "$KUBECTL" apply -f - >/dev/null
    "$KUBECTL" -n team-b create rolebinding bob-edit --clusterrole=edit --user=bob --dry-run=client -o yaml |
        "$KUBECTL" apply -f - >/dev/null
    "$KUBECTL" -n team-a create rolebinding carol-view --clusterrole=view --user=carol --dry-run=client -o yaml |
        "$KUBECTL" apply -f - >/dev/null
    # The controller manager aggregates the rules into edit and view.
    wait_until 60 "edit aggregates the InferenceService rules" clusterroles \
        as alice auth can-i create inferenceservices.serving.sluice.dev -n team-a

    local key_of_team_a key_of_team_b
    key_of_team_a=$(new_api_key)
    key_of_team_b=$(new_api_key)
    for tenant in alice:team-a:$key_of_team_a bob:team-b:$key_of_team_b; do
        IFS=: read -r user ns key <<<"$tenant"
        as "$user" -n "$ns" create secret generic keys --from-literal=keys.yaml="$(keys_yaml "$user" "$key")" \
            --dry-run=client -o yaml | as "$user" apply -f - >/dev/null
        cat <<YAML | as "$user" apply -f - >/dev/null
apiVersion: serving.sluice.dev/v1alpha1
kind: InferenceService
metadata: {name: model, namespace: $ns}
spec:
  minReplicas: 1
  model: {storageUri: "file://$MODELS_DIR/iris/1/model.onnx"}
  security: {apiKeysSecret: keys}
YAML
    done
    "$KUBECTL" -n team-a wait isvc/model --for=condition=Ready --timeout=240s >/dev/null
    "$KUBECTL" -n team-b wait isvc/model --for=condition=Ready --timeout=240s >/dev/null

    # alice in her namespace: read, command, call through the service proxy.
    as alice -n team-a get isvc model -o jsonpath='{.status.phase}' | grep -qx Ready
    as alice -n team-a annotate isvc model serving.sluice.dev/rollout=pause --overwrite >/dev/null
    as alice -n team-a get --raw "/api/v1/namespaces/team-a/services/model:http/proxy/v2/health/ready" >/dev/null

    # ... and nothing in team-b's.
    refused "alice reading team-b's model" as alice -n team-b get isvc model
    refused "alice listing team-b's models" as alice -n team-b get isvc
    refused "alice changing team-b's model" as alice -n team-b patch isvc model --type=merge -p '{"spec":{"minReplicas":3}}'
    refused "alice commanding team-b's rollout" as alice -n team-b annotate isvc model serving.sluice.dev/rollout=abort
    refused "alice deleting team-b's model" as alice -n team-b delete isvc model
    refused "alice calling team-b's model" as alice get --raw "/api/v1/namespaces/team-b/services/model:http/proxy/v2/health/ready"
    refused "alice reading team-b's pods" as alice -n team-b get pods
    refused "alice writing team-a's status" as alice -n team-a patch isvc model --subresource=status --type=merge -p '{"status":{"phase":"Ready"}}'
    # Straight to team-b's Service, as a pod of team-a would call it: without a
    # key, or with team-a's, refused; team-b's own key is answered. alice cannot
    # read team-b's keys.
    local team_b
    team_b="http://$("$KUBECTL" -n team-b get svc model -o jsonpath='{.spec.clusterIP}'):8080/v2/models/model/infer"
    expect_status 401 "a call to team-b's model without a key" "$team_b"
    expect_status 401 "a call to team-b's model with team-a's key" "$team_b" -H "X-API-Key: $key_of_team_a"
    expect_status 200 "a call to team-b's model with team-b's key" "$team_b" -H "X-API-Key: $key_of_team_b"
    refused "alice reading team-b's API keys" as alice -n team-b get secret keys
    # bob, the other way round.
    refused "bob reading team-a's model" as bob -n team-a get isvc model
    refused "bob calling team-a's model" as bob get --raw "/api/v1/namespaces/team-a/services/model:http/proxy/v2/health/ready"

    # carol (view) reads team-a, changes nothing, and sees nothing of team-b.
    as carol -n team-a get isvc model -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -qx True
    refused "carol changing team-a's model" as carol -n team-a patch isvc model --type=merge -p '{"spec":{"minReplicas":3}}'
    refused "carol commanding team-a's rollout" as carol -n team-a annotate isvc model serving.sluice.dev/rollout=resume --overwrite
    refused "carol reading team-b's model" as carol -n team-b get isvc model

    "$KUBECTL" delete namespace team-a team-b --wait=true >/dev/null
    say "two tenants: each manages, commands and calls its own models only (through the API server and straight to the Service); view reads and changes nothing"
}
