"""Harness tests of the local cluster: real control plane, real processes, real
Prometheus. Run by e2e/cluster/test.sh with .cluster/env in the environment.

One Deployment of `python3 -m http.server` (serving a ConfigMap volume that holds a
Prometheus text file at /metrics) is created in a fresh namespace; the tests then
follow it from Available to deletion, in order.
"""

import json
import os
import signal
import subprocess
import time
import unittest
import urllib.parse
import urllib.request
import uuid

KUBECTL = os.environ["KUBECTL"]
PROMETHEUS_URL = os.environ["PROMETHEUS_URL"]
LOGS = os.environ["SLUICE_CLUSTER_LOGS"]
NS = f"harness-{uuid.uuid4().hex[:6]}"
REPLICAS = 2
METRICS = "# TYPE harness_build_info gauge\nharness_build_info{version=\"1\"} 1\n"


def kubectl(*args, stdin=None, check=True):
    done = subprocess.run([KUBECTL, *args], input=stdin, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr}")
    return done.stdout


def get(kind, name=None, **selectors):
    args = ["get", kind, "-n", NS, "-o", "json"]
    if name:
        args.insert(2, name)
    for key, value in selectors.items():
        args += [f"--{key.replace('_', '-')}", value]
    return json.loads(kubectl(*args))


def eventually(what, check, timeout=90, interval=0.5):
    """Polls `check` until it returns a truthy value; fails with the last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (AssertionError, OSError, ValueError, KeyError) as error:
            last = error
        time.sleep(interval)
    raise AssertionError(f"{what}: not true within {timeout}s (last: {last!r})")


def pods():
    return get("pods", selector="app=web")["items"]


def pid_of(pod):
    container_id = pod["status"]["containerStatuses"][0].get("containerID", "")
    assert container_id.startswith("process://"), container_id
    return int(container_id.removeprefix("process://"))


def process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


MANIFESTS = {
    "apiVersion": "v1",
    "kind": "List",
    "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-content"},
         "data": {"metrics": METRICS}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
         "spec": {
             "replicas": REPLICAS,
             "selector": {"matchLabels": {"app": "web"}},
             "template": {
                 "metadata": {
                     "labels": {"app": "web", "tier": "harness"},
                     "annotations": {"prometheus.io/scrape": "true",
                                     "prometheus.io/port": "8080",
                                     "prometheus.io/path": "/metrics"}},
                 "spec": {
                     "terminationGracePeriodSeconds": 5,
                     "containers": [{
                         "name": "http",
                         "image": "python:3",
                         "command": ["python3", "-m", "http.server", "8080",
                                     "--directory", "/srv/content"],
                         "ports": [{"name": "http", "containerPort": 8080}],
                         "env": [{"name": "POD_NAME", "valueFrom": {
                             "fieldRef": {"fieldPath": "metadata.name"}}}],
                         "volumeMounts": [{"name": "content", "mountPath": "/srv/content",
                                           "readOnly": True}],
                         "readinessProbe": {"httpGet": {"path": "/metrics", "port": "http"},
                                            "periodSeconds": 1},
                         "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 2,
                                           "failureThreshold": 5},
                     }],
                     "volumes": [{"name": "content", "configMap": {"name": "web-content"}}],
                 }},
         }},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
         "spec": {"selector": {"app": "web"},
                  "ports": [{"port": 80, "targetPort": "http"}]}},
    ],
}


def setUpModule():
    kubectl("create", "namespace", NS)
    eventually("default ServiceAccount", lambda: kubectl(
        "get", "serviceaccount", "default", "-n", NS, check=False))


def tearDownModule():
    kubectl("delete", "namespace", NS, "--wait=false", check=False)


class LocalClusterTest(unittest.TestCase):
    """In order: Available, EndpointSlice, Service, logs, restart, Prometheus, delete."""

    @classmethod
    def setUpClass(cls):
        kubectl("apply", "-n", NS, "-f", "-", stdin=json.dumps(MANIFESTS))

    def test_1_deployment_becomes_available(self):
        def available():
            status = get("deployment", "web").get("status", {})
            conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
            return (conditions.get("Available") == "True"
                    and status.get("readyReplicas") == REPLICAS)
        eventually("Deployment web Available with all replicas ready", available)
        ips = {p["status"]["podIP"] for p in pods()}
        self.assertEqual(len(ips), REPLICAS, "every pod has its own IP")

    def test_2_endpointslice_lists_pod_ips(self):
        want = {p["status"]["podIP"] for p in pods()}

        def listed():
            slices = get("endpointslices",
                         selector="kubernetes.io/service-name=web")["items"]
            ready = {a for s in slices for e in s.get("endpoints") or []
                     if e.get("conditions", {}).get("ready") for a in e["addresses"]}
            return ready == want
        eventually(f"EndpointSlice of web lists {want}", listed)

    def test_3_service_cluster_ip_answers(self):
        ip = get("service", "web")["spec"]["clusterIP"]

        def answers():
            with urllib.request.urlopen(f"http://{ip}/metrics", timeout=2) as reply:
                return reply.read().decode()
        self.assertEqual(eventually(f"http://{ip}/metrics", answers, timeout=30), METRICS)

    def test_4_container_logs_reach_files_and_kubectl_logs(self):
        pod = pods()[0]
        directory = os.path.join(
            LOGS, "pods", f"{NS}_{pod['metadata']['name']}_{pod['metadata']['uid']}", "http")

        def logged():
            text = ""
            for name in os.listdir(directory):
                with open(os.path.join(directory, name)) as log:
                    text += log.read()
            return "GET /metrics" in text
        eventually(f"http.server's request log in {directory}", logged, timeout=20)
        via_api = kubectl("logs", "-n", NS, pod["metadata"]["name"], "-c", "http", "--tail=50")
        self.assertIn("GET /metrics", via_api, "kubectl logs reads the same file")

    def test_5_killed_container_restarts(self):
        pod = pods()[0]
        name = pod["metadata"]["name"]
        pid = pid_of(pod)
        os.kill(pid, signal.SIGKILL)

        def restarted():
            p = get("pod", name)
            status = p["status"]["containerStatuses"][0]
            return (status["restartCount"] >= 1 and status["ready"]
                    and pid_of(p) != pid and process_alive(pid_of(p)))
        eventually(f"pod {name} restarted its container and is ready again", restarted)
        last = get("pod", name)["status"]["containerStatuses"][0]["lastState"]
        self.assertEqual(last["terminated"]["exitCode"], 128 + signal.SIGKILL)

    def test_6_prometheus_scrapes_pods(self):
        names = {p["metadata"]["name"] for p in pods()}
        query = urllib.parse.urlencode({"query": f'up{{namespace="{NS}"}}'})

        def up():
            with urllib.request.urlopen(f"{PROMETHEUS_URL}/api/v1/query?{query}",
                                        timeout=5) as reply:
                result = json.load(reply)["data"]["result"]
            healthy = {r["metric"]["pod"] for r in result if r["value"][1] == "1"}
            if healthy != names:
                return False
            return all(r["metric"].get("app") == "web" and r["metric"].get("tier") == "harness"
                       for r in result)
        eventually(f"Prometheus reports up=1 for {names} with pod labels", up, timeout=120)

    def test_7_deleting_deployment_stops_processes(self):
        pids = [pid_of(p) for p in pods()]
        self.assertTrue(all(process_alive(p) for p in pids))
        kubectl("delete", "deployment", "web", "-n", NS, "--wait=false")
        eventually("pods of web gone", lambda: not pods(), timeout=60)
        eventually(f"processes {pids} exited",
                   lambda: not any(process_alive(p) for p in pids), timeout=30)


if __name__ == "__main__":
    unittest.main()


class PodFeaturesTest(unittest.TestCase):
    """Init containers, Secret env, a shared emptyDir, the service-account token,
    hostname and an exec readiness probe, seen from inside the container."""

    def test_init_env_volumes_and_exec_probe(self):
        pod = {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "features"},
            "spec": {
                "terminationGracePeriodSeconds": 3,
                "restartPolicy": "Never",
                "initContainers": [{
                    "name": "init", "image": "busybox",
                    "command": ["sh", "-c", 'echo "init saw $TOKEN" > /work/init.txt'],
                    "env": [{"name": "TOKEN", "valueFrom": {
                        "secretKeyRef": {"name": "features", "key": "token"}}}],
                    "volumeMounts": [{"name": "work", "mountPath": "/work"}]}],
                "containers": [{
                    "name": "main", "image": "busybox",
                    "command": ["sh", "-c",
                                "cat /work/init.txt; echo host=$(hostname); "
                                "echo ns=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace); "
                                "exec sleep 300"],
                    "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                    "readinessProbe": {"exec": {"command": ["test", "-f", "/work/init.txt"]},
                                       "periodSeconds": 1}}],
                "volumes": [{"name": "work", "emptyDir": {}}]}}
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "features"},
                  "stringData": {"token": "s3cret"}}
        kubectl("apply", "-n", NS, "-f", "-",
                stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": [secret, pod]}))

        def ready():
            conditions = get("pod", "features").get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        eventually("pod features Ready", ready, timeout=60)
        logs = kubectl("logs", "-n", NS, "features", "-c", "main")
        self.assertIn("init saw s3cret", logs)
        self.assertIn("host=features", logs)
        self.assertIn(f"ns={NS}", logs)
        kubectl("delete", "pod", "features", "-n", NS, "--wait=false")
        eventually("pod features deleted",
                   lambda: not kubectl("get", "pod", "features", "-n", NS, "--ignore-not-found"),
                   timeout=30)
