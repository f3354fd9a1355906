"""GET /metrics serves Prometheus text with the metrics the design names."""

import re

from fixture_models import load_reference
from oip_clients import http_infer

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(server):
    """All samples on /metrics as (metric name, labels dict, value)."""
    response = server.request("GET", "/metrics")
    assert response.status == 200
    content_type = {k.lower(): v for k, v in response.headers.items()}.get("content-type", "")
    assert content_type.startswith("text/plain"), content_type
    samples = []
    for line in response.body.decode("utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        name, labels, value = match.groups()
        samples.append((name, dict(LABEL.findall(labels or "")), float(value)))
    return samples


def mlp_requests_total(samples):
    """Sum of sluice_inference_requests_total over every series of model mlp."""
    return sum(
        value
        for name, labels, value in samples
        if name == "sluice_inference_requests_total" and labels.get("model") == "mlp"
    )


def test_request_counter_counts_mlp_traffic(server, http_client):
    before = mlp_requests_total(scrape(server))
    reference = load_reference("mlp", "1")
    for _ in range(3):
        http_infer(http_client, "mlp", reference, binary=True, version="1")
    samples = scrape(server)
    assert mlp_requests_total(samples) >= before + 3
    assert any(
        name == "sluice_inference_requests_total"
        and labels.get("model") == "mlp"
        and "code" in labels
        for name, labels, _ in samples
    ), "sluice_inference_requests_total has no code label"


def test_model_ready_gauge(server):
    samples = scrape(server)
    mlp_ready = [
        value
        for name, labels, value in samples
        if name == "sluice_model_ready" and labels.get("model") == "mlp"
    ]
    assert mlp_ready, "no sluice_model_ready series for mlp"
    assert all(value == 1 for value in mlp_ready)
