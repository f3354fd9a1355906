#!/usr/bin/env python3
"""Steady inference traffic for the rollout and chaos end-to-end tests.

Sends RATE requests per second, spread over a few worker threads, to an Open
Inference Protocol endpoint with rows of the ``mlp`` fixture's shape ([1, 16] FP32
``input``): random normal rows (real traffic) or, with --zeros, all-zero rows (a
smoke test, the same rows the server's warm-up sends).

Three kinds of client (--client):
  conn       one new TCP connection per request (``Connection: close``), as a
             client behind a connection-per-request proxy does;
  keepalive  one ``requests.Session`` per worker, whose urllib3 pool keeps the
             connection open between requests, as most HTTP client libraries do;
  grpc       one tritonclient gRPC client per worker (a grpc C-core channel with
             its own connection, which stays open), to the host of --url on
             --grpc-port, the same model.
The last two reach a new pod only when the server rotates their connections
(sluice-server --max-connection-age-seconds), as real callers do.

A gRPC answer counts under the HTTP code the server gives the same error over REST
(INTERNAL 500, UNAVAILABLE 503, ...); a call that never got an answer is 0.

With --retries N a request that fails with a network error (no HTTP answer) is sent
again, up to N more times after 50 ms, 100 ms, ... (at most 1 s), as a client retrying
an idempotent call does; an HTTP answer, whatever its code, is never retried.

Every 5 seconds it appends a line ``<unix time> <status code>=<count> ...`` to --stats
(final outcomes since start; 0 is a network error). On SIGTERM, SIGINT or after
--seconds it lets in-flight requests finish and writes --summary: a JSON object with
the counted outcomes (``sent``, ``codes``, ``failed``, ``retried`` attempts,
``errors`` by kind and the first ones with their time).
"""

import argparse
import json
import random
import signal
import threading
import time
import urllib.parse
from collections import Counter

import numpy

import requests
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

FEATURES = 16
# Network errors kept with their time in the summary (the rest are only counted).
KEPT_ERRORS = 50


# The HTTP status the server answers over REST for the gRPC code of the same error
# (server/src/error.rs); UNAVAILABLE is also what a call that never reached a
# server gets, so it is a network error (retried), as over HTTP.
GRPC_TO_HTTP = {
    "StatusCode.NOT_FOUND": 404,
    "StatusCode.INVALID_ARGUMENT": 400,
    "StatusCode.OUT_OF_RANGE": 413,
    "StatusCode.ALREADY_EXISTS": 409,
    "StatusCode.RESOURCE_EXHAUSTED": 429,
    "StatusCode.DEADLINE_EXCEEDED": 504,
    "StatusCode.INTERNAL": 500,
}


class NetworkError(Exception):
    """A call that got no answer from a server."""


def row(zeros):
    return [0.0] * FEATURES if zeros else [random.gauss(0.0, 1.0) for _ in range(FEATURES)]


class Client:
    """One worker's client: HTTP with a fresh connection per request or a keep-alive
    pool, or a gRPC channel."""

    def __init__(self, kind, url, grpc_port):
        self.kind = kind
        self.url = url
        if kind == "grpc":
            address = urllib.parse.urlsplit(url)
            self.model = address.path.split("/")[3]  # /v2/models/<name>/infer
            # A subchannel pool of its own: C-core otherwise shares one connection
            # among the channels of a process, and each worker stands for a caller.
            self.grpc = grpcclient.InferenceServerClient(
                f"{address.hostname}:{grpc_port}",
                channel_args=[("grpc.use_local_subchannel_pool", 1)],
            )
        else:
            self.session = requests.Session()

    def send(self, values):
        """Returns the HTTP status (or its equivalent), or raises NetworkError."""
        if self.kind == "grpc":
            tensor = grpcclient.InferInput("input", [1, FEATURES], "FP32")
            tensor.set_data_from_numpy(numpy.array([values], dtype=numpy.float32))
            try:
                self.grpc.infer(self.model, [tensor], client_timeout=10)
                return 200
            except InferenceServerException as error:
                if error.status() in GRPC_TO_HTTP:
                    return GRPC_TO_HTTP[error.status()]
                raise NetworkError(f"{error.status()}: {error.message()}") from error
        data = json.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, FEATURES], "data": values}]}
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.kind == "conn":
            headers["Connection"] = "close"
        try:
            response = self.session.post(self.url, data=data, headers=headers, timeout=10)
            response.content  # read the whole answer before the next request
        except requests.RequestException as error:
            raise NetworkError(str(error)) from error
        return response.status_code


class Tally:
    """Outcomes counted by every worker."""

    def __init__(self):
        self.lock = threading.Lock()
        self.codes = Counter()
        self.kinds = Counter()
        self.first_errors = []
        self.retried = 0

    def network_error(self, error, final):
        error = error.__cause__ or error  # the client library's own exception
        kind = type(error).__name__
        cause = error.__context__ or error.__cause__
        while cause is not None and cause.__context__ is not None and len(kind) < 200:
            kind += "/" + type(cause).__name__
            cause = cause.__context__
        with self.lock:
            if final:
                self.kinds[kind] += 1
                if len(self.first_errors) < KEPT_ERRORS:
                    self.first_errors.append({"at": round(time.time(), 3), "error": str(error)[:300]})
            else:
                self.retried += 1

    def outcome(self, code):
        with self.lock:
            self.codes[code] += 1

    def summary(self):
        with self.lock:
            sent = sum(self.codes.values())
            return {
                "sent": sent,
                "ok": self.codes.get(200, 0),
                "failed": sent - self.codes.get(200, 0),
                "codes": {str(code): n for code, n in sorted(self.codes.items())},
                "retried": self.retried,
                "errors": dict(self.kinds),
                "first_errors": self.first_errors,
            }


def request(client, zeros, retries, tally):
    values = row(zeros)
    for attempt in range(retries + 1):
        try:
            return client.send(values)
        except NetworkError as error:
            final = attempt == retries
            tally.network_error(error, final)
            if final:
                return 0
            time.sleep(min(0.05 * 2**attempt, 1.0))
    return 0


def worker(args, period, stop, tally):
    client = Client(args.client, args.url, args.grpc_port)
    next_at = time.monotonic() + random.random() * period
    while not stop.is_set():
        delay = next_at - time.monotonic()
        if delay > 0:
            if stop.wait(delay):
                break
        tally.outcome(request(client, args.zeros, args.retries, tally))
        next_at = max(next_at + period, time.monotonic() - period)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--url", required=True, help="the /v2/models/<name>/infer URL")
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--client", choices=["conn", "keepalive", "grpc"], default="conn")
    parser.add_argument("--grpc-port", type=int, default=8081, help="gRPC port (--client grpc)")
    parser.add_argument("--retries", type=int, default=0, help="resends after a network error")
    parser.add_argument("--zeros", action="store_true", help="all-zero rows (smoke traffic)")
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0: never)")
    parser.add_argument("--stats", help="file to append counts to every 5 s")
    parser.add_argument("--summary", help="file to write the final counts to (JSON)")
    args = parser.parse_args()
    if args.rate <= 0 or args.workers < 1 or args.retries < 0:
        parser.error("--rate must be positive, --workers at least 1, --retries not negative")
    stop, tally = threading.Event(), Tally()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    period = args.workers / args.rate
    threads = [
        threading.Thread(target=worker, args=(args, period, stop, tally), daemon=True)
        for _ in range(args.workers)
    ]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    while not stop.is_set():
        left = args.seconds - (time.monotonic() - started) if args.seconds else 5
        if left <= 0 or stop.wait(min(5, left)):
            break
        if args.stats:
            line = " ".join(f"{code}={n}" for code, n in sorted(tally.summary()["codes"].items()))
            with open(args.stats, "a", encoding="utf-8") as out:
                out.write(f"{time.time():.0f} {line}\n")
    stop.set()
    for thread in threads:
        thread.join(timeout=15)
    if args.summary:
        with open(args.summary, "w", encoding="utf-8") as out:
            json.dump(tally.summary(), out)
            out.write("\n")


if __name__ == "__main__":
    main()
