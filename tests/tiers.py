"""The fast tier stays fast: a test that starts a process or uses the bundled model must be ``slow``.

``make test-fast`` runs ``-m "not slow and not browser"``. This plugin (loaded by
tests/conftest.py) watches every test that is not marked ``slow``, through its setup, call and
teardown, and fails it when it starts a process (``subprocess.Popen``: a worker, ``manage.py``, a
server, the browser Playwright launches) or reaches the real model (a load, or the process's
already loaded copy, which it would have loaded if it ran alone). The failure names what it did
and where. The redis-server the session shares is the one process allowed (:func:`allowed`).

It also orders the tests, the longest first (:func:`pytest_collection_modifyitems`).
"""

from __future__ import annotations

import contextlib
import functools
import subprocess
import traceback
from collections.abc import Callable, Generator, Iterator
from typing import Any, TypeVar

import pytest

F = TypeVar("F", bound=Callable[..., Any])
OFFENCE = pytest.StashKey[str]()  # the first thing a watched test did that it must not

_watched: pytest.Item | None = None  # the unmarked test running now, if any
_allowed = 0  # > 0 inside allowed(): shared session infrastructure


@contextlib.contextmanager
def allowed() -> Iterator[None]:
    """Processes started inside this block are the session's own (the embedded redis-server)."""
    global _allowed
    _allowed += 1
    try:
        yield
    finally:
        _allowed -= 1


def _offence(what: str) -> None:
    """Record the first thing the watched test did that the fast tier must not (and where)."""
    if _watched is None or _allowed or _watched.stash.get(OFFENCE, ""):
        return
    where = "".join(traceback.format_stack(limit=8)[:-2])
    _watched.stash[OFFENCE] = f"{what}, here:\n{where}"


def _watching(what: str, func: F) -> F:
    @functools.wraps(func)
    def watched(*args: Any, **kwargs: Any) -> Any:
        _offence(what)
        return func(*args, **kwargs)

    return watched  # type: ignore[return-value]


def _watch_popen() -> None:
    original = subprocess.Popen.__init__

    @functools.wraps(original)
    def __init__(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        _offence(f"it started a process: {args!r}")
        original(self, args, *rest, **kwargs)

    subprocess.Popen.__init__ = __init__  # type: ignore[method-assign]


def _watch_model() -> None:
    from jobs.engine import local_lm, model_store

    model_store.load_base_model = _watching(
        "it loaded the bundled model (model_store.load_base_model)", model_store.load_base_model
    )
    local_lm.get_loaded_model = _watching(
        "it used the loaded model (local_lm.get_loaded_model)", local_lm.get_loaded_model
    )
    local_lm.get_shared_base = _watching(
        "it used the loaded model (local_lm.get_shared_base)", local_lm.get_shared_base
    )


def pytest_configure(config: pytest.Config) -> None:
    _watch_popen()
    _watch_model()


@pytest.hookimpl(trylast=True)  # after pytest-django's order (TestCase, TransactionTestCase, no db)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest work first: slow tests whose rows a worker, a server or a browser reads (a
    worker subprocess trains or bootstraps), then the other slow tests, then the rest, each in the
    order it had. With pytest-xdist every process starts on long work at once and the short tests
    fill in at the end, instead of one process finishing a fine-tune alone while the other idles."""

    def tier(item: pytest.Item) -> int:
        if item.get_closest_marker("slow") is None:
            return 2
        return 0 if _commits_rows(item) else 1

    items.sort(key=tier)


def _commits_rows(item: pytest.Item) -> bool:
    """A TransactionTestCase, ``django_db(transaction=True)`` or ``live_server`` test."""
    from django.test import TestCase, TransactionTestCase

    cls = getattr(item, "cls", None)
    if cls is not None and issubclass(cls, TransactionTestCase):
        return not issubclass(cls, TestCase)
    marker = item.get_closest_marker("django_db")
    fixtures = getattr(item, "fixturenames", ())
    return bool(marker and marker.kwargs.get("transaction")) or "live_server" in fixtures


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
    global _watched
    _watched = None if item.get_closest_marker("slow") else item
    try:
        return (yield)
    finally:
        _watched = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    offence = item.stash.get(OFFENCE, "")
    if offence and report.outcome != "skipped":
        item.stash[OFFENCE] = ""
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} is not marked slow, but during its {report.when} {offence}\n"
            "Mark it @pytest.mark.slow (README, Tests): the fast tier does neither."
        )
    return report
