#!/usr/bin/env python3
"""Samples an InferenceService on the local cluster while a load test runs.

``sample.py watch`` appends one JSON line per --every seconds to --out: for each pod of
the InferenceService its phase, restart count, the server's resident memory (from
/proc, through the node agent's pid file) and ``sluice_inference_queue_depth`` (from
the pod's /metrics), plus the autoscaler's desired replica count. Runs until killed.

``sample.py summary`` reads those lines and prints one JSON object: RSS first, last and
highest per pod, the highest queue depth, restarts, and the desired replicas seen.
"""

import argparse
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

QUEUE = re.compile(r"^sluice_inference_queue_depth\{[^}]*\}\s+([0-9.eE+-]+)$", re.M)


def kubectl(args, kubectl_bin, namespace):
    out = subprocess.run(
        [kubectl_bin, "-n", namespace, *args, "-o", "json"],
        check=True, capture_output=True, text=True, timeout=20,
    )
    return json.loads(out.stdout)


def rss_kib(pods_dir, uid):
    try:
        pid = (Path(pods_dir) / uid / "server.pid").read_text().split()[0]
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return None


def queue_depth(ip):
    try:
        with urllib.request.urlopen(f"http://{ip}:8080/metrics", timeout=3) as response:
            text = response.read().decode()
    except OSError:
        return None
    return sum(float(v) for v in QUEUE.findall(text))


def watch(args):
    running = True

    def stop(*_):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    started = time.time()
    while running:
        pods = kubectl(["get", "pods", "-l", f"serving.sluice.dev/inferenceservice={args.isvc}"],
                       args.kubectl, args.namespace)["items"]
        isvc = kubectl(["get", "isvc", args.isvc], args.kubectl, args.namespace)
        sample = {
            "t": round(time.time() - started, 1),
            "desired": isvc.get("status", {}).get("autoscaling", {}).get("desiredReplicas"),
            "pods": [],
        }
        for pod in pods:
            status = pod.get("status", {})
            restarts = sum(c.get("restartCount", 0) for c in status.get("containerStatuses", []))
            ip = status.get("podIP")
            sample["pods"].append({
                "name": pod["metadata"]["name"],
                "phase": status.get("phase"),
                "restarts": restarts,
                "rss_kib": rss_kib(args.pods_dir, pod["metadata"]["uid"]),
                "queue": queue_depth(ip) if ip else None,
            })
        with open(args.out, "a", encoding="utf-8") as out:
            out.write(json.dumps(sample) + "\n")
        deadline = time.time() + args.every
        while running and time.time() < deadline:
            time.sleep(0.2)


def summary(args):
    samples = [json.loads(line) for line in open(args.out, encoding="utf-8") if line.strip()]
    if not samples:
        sys.exit(f"no samples in {args.out}")
    pods = {}
    for sample in samples:
        for pod in sample["pods"]:
            entry = pods.setdefault(pod["name"], {"rss_mib": [], "restarts": 0, "queue_max": 0.0})
            if pod["rss_kib"] is not None:
                entry["rss_mib"].append(round(pod["rss_kib"] / 1024, 1))
            entry["restarts"] = max(entry["restarts"], pod["restarts"])
            if pod["queue"] is not None:
                entry["queue_max"] = max(entry["queue_max"], pod["queue"])
    result = {
        "samples": len(samples),
        "seconds": samples[-1]["t"],
        "desired_replicas": sorted({s["desired"] for s in samples if s["desired"] is not None}),
        "desired_first_last": [samples[0]["desired"], samples[-1]["desired"]],
        "restarts": sum(p["restarts"] for p in pods.values()),
        "queue_depth_max": max((p["queue_max"] for p in pods.values()), default=0.0),
        "rss_mib": {
            name: {"first": p["rss_mib"][0], "last": p["rss_mib"][-1], "max": max(p["rss_mib"])}
            for name, p in pods.items() if p["rss_mib"]
        },
    }
    print(json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("mode", choices=["watch", "summary"])
    parser.add_argument("--out", required=True, help="the JSON-lines file of samples")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--isvc")
    parser.add_argument("--kubectl", default="kubectl")
    parser.add_argument("--pods-dir", help="the node agent's pods folder (.cluster/node/pods)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    args = parser.parse_args()
    if args.mode == "watch":
        if not args.isvc or not args.pods_dir:
            parser.error("watch needs --isvc and --pods-dir")
        watch(args)
    else:
        summary(args)


if __name__ == "__main__":
    main()
