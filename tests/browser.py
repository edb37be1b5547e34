"""Headless Debian chromium driven by Playwright, shared by the browser tests.

Never a downloaded browser (`playwright install`): CI installs Debian's chromium with apt.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "var" / "screenshots"
# Without the background-networking flags chromium keeps dialing hosts this network refuses.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)",
)


@contextmanager
def chromium_context(**context_options: Any) -> Iterator[Any]:
    """A fresh browser context (1366×900 unless told otherwise); closed with the browser."""
    from django.db import connections
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are
    # synchronous and safe, so Django must not refuse them.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            context_options.setdefault("viewport", {"width": 1366, "height": 900})
            try:
                yield browser.new_context(**context_options)
            finally:
                # While Playwright's loop runs, Django keeps this thread's connections in that
                # loop's context: close them there, or PostgreSQL cannot drop the test database.
                connections.close_all()
                browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


def clear_shots(prefix: str) -> None:
    """Remove one test's old screenshots (and only those: the tests share the folder)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob(f"{prefix}*.png"):
        old.unlink()


@pytest.fixture
def browser_page() -> Iterator[Any]:
    """A page in a fresh chromium context, 15 s default timeout."""
    with chromium_context() as context:
        page = context.new_page()
        page.set_default_timeout(15_000)
        yield page


class Shots:
    """``shot(name)``: a full-page screenshot, var/screenshots/<prefix><NN>-<name>.png; with
    ``clear``, the prefix's old screenshots are removed first."""

    def __init__(self, page: Any, prefix: str, *, clear: bool = False) -> None:
        self.page = page
        self.prefix = prefix
        self.n = 0
        if clear:
            clear_shots(prefix)

    def __call__(self, name: str) -> None:
        self.n += 1
        self.page.screenshot(
            path=str(SHOTS / f"{self.prefix}{self.n:02d}-{name}.png"), full_page=True
        )
