"""Fixtures for the conformance tests: the model repository and one running server.

One server serves the whole session; at the end it gets SIGTERM and must exit 0
within 10 s (graceful shutdown is a requirement).
"""

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from fixture_models import MODELS_DIR, ensure_models
from server_process import start_server


@pytest.fixture(scope="session", autouse=True)
def fixture_repository():
    """The generated model repository, generated first if it is missing."""
    ensure_models()
    return MODELS_DIR


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The session's server; its graceful shutdown is checked at teardown."""
    running = start_server(tmp_path_factory.mktemp("server") / "server.log")
    yield running
    code = running.terminate()
    assert code == 0, f"sluice-server exited with {code} on SIGTERM:\n{running.log_tail()}"


@pytest.fixture(scope="session")
def http_client(server):
    client = httpclient.InferenceServerClient(server.http_url, network_timeout=30.0)
    yield client
    client.close()


@pytest.fixture(scope="session")
def grpc_client(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield client
    client.close()
