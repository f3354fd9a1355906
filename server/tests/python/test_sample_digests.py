"""Every digest a sample or an end-to-end manifest pins matches the fixture it names.

The iris sample pins ``spec.model.sha256`` of a fixture that ``make deps`` generates;
when the fixture changes (a generator edit, a package in scripts/requirements.txt) and
the sample does not, ``make up`` ends with both pods in Init:CrashLoopBackOff because
the fetcher refuses the file. This test finds every ``sha256`` field (the CRD's only
digest, ``spec.model.sha256``) in the YAML under config/, e2e/ and charts/, and in the
```yaml blocks of docs/ and README.md, pairs it with the ``storageUri`` beside it and,
when that URI names a fixture, compares the digest with the file's. URIs that name no
fixture (``s3://`` examples in the docs) are not checked; at least the iris sample
always is.
"""

import hashlib
import re

import pytest
import yaml

from fixture_models import MODELS_DIR, REPO

# Where the local cluster's scripts copy server/fixtures/models (MODELS_DIR in
# e2e/operator/lib.sh), so that file:// URIs in samples work in pods.
LIB_SH = REPO / "e2e" / "operator" / "lib.sh"
SEARCHED = ["config", "e2e", "charts", "docs", "README.md"]
SKIPPED_DIRS = {"k8s-bins", "node-agent", "target", "__pycache__"}
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def cluster_models_dir():
    match = re.search(r"^MODELS_DIR=(\S+)$", LIB_SH.read_text(), re.MULTILINE)
    assert match, f"no MODELS_DIR= line in {LIB_SH}"
    return match.group(1).strip("\"'").rstrip("/")


def yaml_documents(path):
    """(label, document) for each YAML document in a manifest or a Markdown yaml block.

    Other files (a plot beside the docs, for one) are not read at all."""
    if path.suffix == ".md":
        blocks = re.findall(r"^```ya?ml\n(.*?)^```", path.read_text(), re.MULTILINE | re.DOTALL)
    elif path.suffix in (".yaml", ".yml"):
        blocks = [path.read_text()]
    else:
        return
    for number, block in enumerate(blocks):
        try:
            documents = list(yaml.safe_load_all(block))
        except yaml.YAMLError:
            # Helm templates and similar are not plain YAML; they pin no fixture.
            continue
        for document in documents:
            yield f"{path.relative_to(REPO)}#{number}", document


def pinned_digests(node):
    """(digest field, digest, storageUri or None) for each sha256 field in a YAML tree."""
    if isinstance(node, list):
        for item in node:
            yield from pinned_digests(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "sha256" and isinstance(value, str) and HEX64.match(value):
                yield key, value, node.get("storageUri")
            else:
                yield from pinned_digests(value)


def fixture_file(uri):
    """The file under server/fixtures/models that a URI names, or None."""
    if not isinstance(uri, str) or not uri.startswith("file://"):
        return None
    path = uri[len("file://"):]
    prefix = cluster_models_dir() + "/"
    if path.startswith(prefix):
        return MODELS_DIR / path[len(prefix):]
    return None


def manifests():
    for entry in SEARCHED:
        root = REPO / entry
        files = [root] if root.is_file() else sorted(root.rglob("*"))
        for path in files:
            if path.is_file() and not SKIPPED_DIRS.intersection(path.relative_to(REPO).parts):
                yield path


def fixture_pins():
    pins = []
    for path in manifests():
        for label, document in yaml_documents(path):
            for field, digest, uri in pinned_digests(document):
                target = fixture_file(uri)
                if target is not None:
                    pins.append(pytest.param(field, digest, uri, target, id=f"{label}:{field}"))
    return pins


PINS = fixture_pins()


def test_the_iris_sample_is_among_the_checked_pins():
    sample = "config/samples/serving_v1alpha1_inferenceservice_iris.yaml"
    assert any(p.id.startswith(sample) for p in PINS), [p.id for p in PINS]


@pytest.mark.parametrize("field,digest,uri,target", PINS)
def test_pinned_digest_matches_the_fixture(field, digest, uri, target):
    assert target.is_file(), f"{uri} names {target}, which make deps does not generate"
    actual = hashlib.sha256(target.read_bytes()).hexdigest()
    assert actual == digest, (
        f"{field} pins {digest} but {target.relative_to(REPO)} ({uri}) hashes to {actual}: "
        "update the manifest, or find out why the fixture changed (server/fixtures/generate.py, "
        "scripts/requirements.txt)"
    )


def test_a_wrong_digest_is_caught():
    """The checker itself: a manifest pinning another digest for a fixture is reported."""
    document = yaml.safe_load(
        "spec:\n  model:\n"
        f"    storageUri: file://{cluster_models_dir()}/iris/1/model.onnx\n"
        f"    sha256: {'f' * 64}\n"
    )
    [(field, digest, uri)] = list(pinned_digests(document))
    target = fixture_file(uri)
    assert (field, target) == ("sha256", MODELS_DIR / "iris" / "1" / "model.onnx")
    with pytest.raises(AssertionError, match=f"pins {'f' * 64} but"):
        test_pinned_digest_matches_the_fixture(field, digest, uri, target)
