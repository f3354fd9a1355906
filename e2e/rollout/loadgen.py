#!/usr/bin/env python3
"""Steady inference traffic for the rollout end-to-end tests.

Sends RATE requests per second, spread over a few worker threads, to an Open
Inference Protocol endpoint with rows of the ``mlp`` fixture's shape ([1, 16] FP32
``input``): random normal rows (real traffic) or, with --zeros, all-zero rows (a
smoke test, the same rows the server's warm-up sends). Every 5 seconds it appends a
line ``<unix time> <status code>=<count> ...`` to --stats (codes since start; 0 is a
connection error). Runs until killed or --seconds pass.
"""

import argparse
import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

FEATURES = 16


def body(zeros):
    row = [0.0] * FEATURES if zeros else [random.gauss(0.0, 1.0) for _ in range(FEATURES)]
    return json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, FEATURES], "data": row}]}
    ).encode()


def send(url, zeros):
    request = urllib.request.Request(
        url, data=body(zeros), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def worker(url, zeros, period, stop, counts, lock):
    next_at = time.monotonic() + random.random() * period
    while not stop.is_set():
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        code = send(url, zeros)
        with lock:
            counts[code] += 1
        next_at = max(next_at + period, time.monotonic() - period)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the /v2/models/<name>/infer URL")
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--zeros", action="store_true", help="all-zero rows (smoke traffic)")
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0: never)")
    parser.add_argument("--stats", help="file to append counts to every 5 s")
    args = parser.parse_args()
    if args.rate <= 0 or args.workers < 1:
        parser.error("--rate must be positive and --workers at least 1")
    stop, lock, counts = threading.Event(), threading.Lock(), Counter()
    period = args.workers / args.rate
    threads = [
        threading.Thread(
            target=worker, args=(args.url, args.zeros, period, stop, counts, lock), daemon=True
        )
        for _ in range(args.workers)
    ]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    try:
        while not args.seconds or time.monotonic() - started < args.seconds:
            time.sleep(5)
            if args.stats:
                with lock:
                    line = " ".join(f"{code}={n}" for code, n in sorted(counts.items()))
                with open(args.stats, "a", encoding="utf-8") as out:
                    out.write(f"{time.time():.0f} {line}\n")
    except KeyboardInterrupt:
        pass
    stop.set()


if __name__ == "__main__":
    main()
