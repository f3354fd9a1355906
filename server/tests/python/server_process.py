"""Run sluice-server as a child process on free loopback ports.

The server binary comes from ``SLUICE_SERVER_BIN`` (default
``<repo>/target/release/sluice-server``).
"""

import http.client
import os
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixture_models import MODELS_DIR, REPO

READY_TIMEOUT_S = 30
SHUTDOWN_TIMEOUT_S = 10


def server_binary():
    """Path of the server under test; fails the test when it has not been built."""
    path = Path(os.environ.get("SLUICE_SERVER_BIN", REPO / "target" / "release" / "sluice-server"))
    if not path.is_file():
        pytest.fail(f"{path} does not exist: run `make build` or set SLUICE_SERVER_BIN")
    return path


def free_ports(count):
    """Distinct loopback TCP ports that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class Response:
    """A plain HTTP response."""

    status: int
    headers: dict
    body: bytes


@dataclass
class Server:
    """A running sluice-server process and how to reach it."""

    process: subprocess.Popen
    http_port: int
    grpc_port: int
    log_path: Path
    ssl_context: ssl.SSLContext | None = None

    @property
    def http_url(self):
        return f"127.0.0.1:{self.http_port}"

    @property
    def base_url(self):
        """The REST endpoint with its scheme, e.g. ``https://127.0.0.1:8080``."""
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.http_url}"

    @property
    def grpc_url(self):
        return f"127.0.0.1:{self.grpc_port}"

    def request(self, method, path, body=None, headers=None, timeout=10):
        """Send one HTTP request on a fresh connection, without any client library."""
        if self.ssl_context:
            connection = http.client.HTTPSConnection(
                "127.0.0.1", self.http_port, timeout=timeout, context=self.ssl_context
            )
        else:
            connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return Response(response.status, dict(response.getheaders()), response.read())
        finally:
            connection.close()

    def log_tail(self, lines=40):
        """The last lines the server wrote to stdout and stderr."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout=READY_TIMEOUT_S):
        """Poll GET /v2/health/ready until it answers 200; fail with the log otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"sluice-server exited with {self.process.returncode} before it was "
                    f"ready:\n{self.log_tail()}"
                )
            try:
                if self.request("GET", "/v2/health/ready", timeout=1).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.process.kill()
        self.process.wait()
        pytest.fail(f"sluice-server was not ready within {timeout}s:\n{self.log_tail()}")

    def terminate(self, timeout=SHUTDOWN_TIMEOUT_S):
        """Send SIGTERM and return the exit code; kill and fail if it hangs."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"sluice-server ignored SIGTERM for {timeout}s:\n{self.log_tail()}")


def start_server(log_path, model_repository=MODELS_DIR, extra_args=(), ssl_context=None):
    """Start sluice-server on free ports and wait until it reports ready.

    extra_args are more command-line flags; ssl_context is how to reach a server
    that extra_args put behind TLS.
    """
    http_port, grpc_port = free_ports(2)
    command = [
        str(server_binary()),
        "serve",
        "--model-repository",
        str(model_repository),
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        *extra_args,
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    server = Server(process, http_port, grpc_port, log_path, ssl_context)
    server.wait_ready()
    return server
