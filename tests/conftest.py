"""Shared fixtures: a minimal benchmark in the real file layouts, built in tmp dirs.

Nothing here downloads anything; the real-data tests read ../shared/data through
harness.data.resolve_data_root and skip with a reason when it is absent.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from harness.cache import cache_root
from harness.data import DataError, resolve_data_root
from tests.fixtures import REAL_CACHE, make_mini_benchmark, tiny_built, tiny_model

# pytest-xdist (pyproject.toml's addopts: one worker per core): the tests marked ``ray`` form
# one group (--dist loadgroup) that one worker runs in turn while the others take the rest.
# Each worker computes on one thread (two workers of two threads each on two cores were
# slower than one), and keeps Ray's temp dir to itself: Ray finds "the running cluster" there,
# so a plain ``ray.init()`` on one worker never joins a cluster another worker started.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if WORKER:
    torch.set_num_threads(1)
    _base = os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()
    os.environ["RAY_TMPDIR"] = os.path.join(_base, f"gere-{WORKER}")
RAY_SESSION_LINK = Path(
    os.environ.get("RAY_TMPDIR") or tempfile.gettempdir(), "ray", "session_latest"
)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.xdist_group("ray"))


def _ray_session() -> str | None:
    return os.path.realpath(RAY_SESSION_LINK) if RAY_SESSION_LINK.is_symlink() else None


@pytest.fixture(autouse=True)
def _ray_only_where_marked(request: pytest.FixtureRequest):
    """A test that starts Ray (here or in a subprocess) must be marked ``ray``: beside another
    Ray test's cluster it would compete for the cores its start-up timeouts assume."""
    if request.node.get_closest_marker("ray"):
        yield
        return
    before = _ray_session()
    yield
    ray = sys.modules.get("ray")
    if _ray_session() != before or (ray is not None and ray.is_initialized()):
        pytest.fail(
            f"{request.node.nodeid} started Ray but is not marked: add @pytest.mark.ray "
            "(pytest-xdist then runs it in turn with the other Ray tests)"
        )


@pytest.fixture
def tiny():
    """The shared tiny Llama: a factory ``tiny(vocab=64, seed=0, **shape)`` (see
    :func:`tests.fixtures.tiny_model`; modules that need it at import time import that)."""
    return tiny_model


@pytest.fixture
def built():
    """The harness's 'tiny' preset as a factory ``built(seed=0, keep_reference=False, **model)``."""
    return tiny_built


@pytest.fixture
def mini_root(tmp_path: Path) -> Path:
    return make_mini_benchmark(tmp_path / "data")


@pytest.fixture
def shared_data() -> Path:
    """The real benchmark (../shared/data or $GERE_DATA_DIR); skips when absent."""
    try:
        root = resolve_data_root(None)
    except DataError as exc:
        pytest.skip(f"real data not available: {exc}")
    if not (root / "long_sequence").is_dir():
        pytest.skip(f"real data not available: {root}/long_sequence is missing")
    return root


@pytest.fixture
def smollm2(shared_data: Path) -> str:
    """The real model ``smollm2-135m`` (prepared once with ``gere model prepare smollm2-135m``)
    made visible in this test's cache root (a link, also for subprocesses and Ray workers);
    skips when it is not prepared or the real data is absent. Returns the model name."""
    import os

    from harness.prepared_models import GGUF_MODELS, prepared_dir

    name = "smollm2-135m"
    real = REAL_CACHE / prepared_dir(name).relative_to(cache_root())
    if not (real / "prepared.json").is_file():
        pytest.skip(
            f"{name} is not prepared in {REAL_CACHE}: `{GGUF_MODELS[name].install}` then "
            f"`gere model prepare {name}`"
        )
    here = prepared_dir(name)
    here.parent.mkdir(parents=True, exist_ok=True)
    if not here.exists():
        os.symlink(real, here, target_is_directory=True)
    return name


@pytest.fixture(autouse=True)
def _deterministic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    torch.manual_seed(0)
    monkeypatch.setenv("GERE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def s3(monkeypatch):
    """An S3-compatible server on localhost (moto's server mode) holding an empty bucket
    ``bucket``, with the standard AWS variables pointing at it (AWS_ENDPOINT_URL, fake keys)
    for this process and any it starts. Yields the endpoint URL."""
    import logging

    pytest.importorskip("moto", reason="moto[s3] is a dev dependency (pip install -e '.[dev]')")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for key, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    import urllib.request

    import pyarrow.fs as pafs

    # moto keeps its buckets in this process's memory: start every test from none
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))

    pafs.S3FileSystem(
        endpoint_override=endpoint, scheme="http", allow_bucket_creation=True
    ).create_dir("bucket")
    try:
        yield endpoint
    finally:
        server.stop()
