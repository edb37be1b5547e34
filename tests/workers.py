"""Start the RQ worker exactly as `make run` and the README do, pointed at the test database."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from django.db import connection

from jobs.devtools import stop_process, worker_command

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def database_url_for_workers() -> str:
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    auth = quote(s["USER"] or "") + (f":{quote(s['PASSWORD'])}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def start_worker(log: Path, *queues: str) -> subprocess.Popen[bytes]:
    """`manage.py rqworker default gpu --worker-class jobs.worker.BftWorker`, in its own process group."""
    env = dict(
        os.environ,
        DATABASE_URL=database_url_for_workers(),
        BFT_WORKER_HEARTBEAT_S="1",
        BFT_PROGRESS_EVERY_S="0",  # the database follows every step, so tests can reason in steps
        PYTHONUNBUFFERED="1",
    )
    with log.open("ab") as out:
        return subprocess.Popen(
            worker_command(*(queues or ("default", "gpu"))),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc): a worker's work horse."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(
    predicate: Callable[[], T | None], *, timeout: float, what: str, every: float = 0.5
) -> T:
    """``predicate()``'s first truthy value, asked every ``every`` s for at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


__all__ = [
    "child_pids",
    "database_url_for_workers",
    "pid_alive",
    "start_worker",
    "stop_process",
    "wait_for",
]
