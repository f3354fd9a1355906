#!/usr/bin/env python3
"""The canary's share of persistent-connection callers' requests, without a cluster.

Two "stable" sluice-server processes sit behind a TCP balancer that places each new
connection on a backend drawn at random, as kube-proxy's iptables mode does. 64
callers that keep their connections open (32 ``requests`` keep-alive sessions and 32
tritonclient gRPC channels, loadgen.py's clients, 40 requests/s in all) start; then a
"canary" server joins the balancer, as a canary pod joins a Service. The script
prints the canary's share of the requests in four 14 s windows from 12 s after it
joined; its weight is a third. Every server runs with
``--max-connection-age-seconds AGE`` (0: rotation off, and the canary gets nothing).

    e2e/rollout/share_local.py [--age 10] [--server target/release/sluice-server]
"""

import argparse
import asyncio
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).parent))
import loadgen  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
WINDOW_S = 14
SETTLE_S = 12
CALLERS = 32
RATE = 20.0  # requests/s per kind of caller


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(binary, age):
    """A ready sluice-server on free ports: (process, http port, grpc port)."""
    http, grpc = free_port(), free_port()
    process = subprocess.Popen(
        [binary, "serve", "--host", "127.0.0.1", "--model-repository", str(REPO / "server/fixtures/models"),
         "--http-port", str(http), "--grpc-port", str(grpc), "--max-connection-age-seconds", str(age)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=1)
            return process, http, grpc
        except OSError:
            time.sleep(0.1)
    process.kill()
    sys.exit(f"{binary} never became ready")


def served(http):
    """Requests a server has answered for mlp."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics").read().decode()
    pattern = r'^sluice_inference_requests_total\{[^}]*model="mlp"[^}]*\} (\S+)'
    return sum(float(value) for value in re.findall(pattern, text, re.M))


async def relay(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


def balancer(ports):
    """A connection handler that relays to a port drawn from `ports` (a live list)."""

    async def handle(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", random.choice(ports))
            await asyncio.gather(relay(client_reader, server_writer), relay(server_reader, client_writer))
        except asyncio.CancelledError:
            client_writer.close()  # the measurement is over

    return handle


def start_callers(http_port, grpc_port, stop, tally):
    for kind in ("keepalive", "grpc"):
        args = SimpleNamespace(client=kind, url=f"http://127.0.0.1:{http_port}/v2/models/mlp/infer",
                               grpc_port=grpc_port, zeros=False, retries=0)
        for _ in range(CALLERS):
            threading.Thread(target=loadgen.worker, args=(args, CALLERS / RATE, stop, tally), daemon=True).start()


async def measure(binary, age):
    servers = [start_server(binary, age) for _ in range(2)]
    http_ports, grpc_ports = [s[1] for s in servers], [s[2] for s in servers]
    front_http, front_grpc = free_port(), free_port()
    listeners = [
        await asyncio.start_server(balancer(http_ports), "127.0.0.1", front_http),
        await asyncio.start_server(balancer(grpc_ports), "127.0.0.1", front_grpc),
    ]
    stop, tally = threading.Event(), loadgen.Tally()
    start_callers(front_http, front_grpc, stop, tally)
    await asyncio.sleep(15)
    canary = start_server(binary, age)
    servers.append(canary)
    http_ports.append(canary[1])
    grpc_ports.append(canary[2])
    print(f"--max-connection-age-seconds {age}: the canary's share of the requests (weight 33%)")
    await asyncio.sleep(SETTLE_S)
    for window in range(4):
        before = [served(s[1]) for s in servers]
        await asyncio.sleep(WINDOW_S)
        counts = [served(s[1]) - b for s, b in zip(servers, before)]
        start = SETTLE_S + WINDOW_S * window
        print(f"  {start:>3}-{start + WINDOW_S:>3} s after it joined: {100 * counts[2] / sum(counts):5.1f}% of {sum(counts):.0f}")
    stop.set()
    summary = tally.summary()
    print(f"  callers: {summary['sent']} requests, {summary['failed']} failed {summary['errors'] or ''}")
    for listener in listeners:
        listener.close()
    for process, _, _ in servers:
        process.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--age", type=float, default=10.0, help="--max-connection-age-seconds of every server")
    parser.add_argument("--server", default=str(REPO / "target/release/sluice-server"))
    args = parser.parse_args()
    asyncio.run(measure(args.server, args.age))


if __name__ == "__main__":
    main()
