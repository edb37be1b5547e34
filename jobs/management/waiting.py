"""Following queued work from a management command: poll the row, print progress, cancel on Ctrl-C."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.management.base import CommandError, OutputWrapper

from jobs.models import QueuedWork, Status
from jobs.services import queue

POLL_S = 2.0
Row = TypeVar("Row", bound=QueuedWork)


def wait_for(
    row: Row,
    describe: Callable[[Row], str],
    stdout: OutputWrapper,
    *,
    on_checked: Callable[[Row], None] | None = None,
) -> None:
    """Poll ``row`` until it ends, printing each new progress line; Ctrl-C (or SIGTERM, see
    distill's sigterm_as_ctrl_c) cancels it. CommandError unless it succeeded.

    A row that pauses "checked" (a run whose smoke test looks broken) goes to ``on_checked``,
    which continues it or raises; without one it is an error."""
    label = f"{row._meta.verbose_name} {row.pk}"
    last = ""
    try:
        while True:
            row.refresh_from_db()
            line = f"{label} [{row.status}] {describe(row)}"
            if line != last:
                stdout.write(line)
                last = line
            if row.is_terminal:
                break
            if row.status == Status.CHECKED:
                if on_checked is None:
                    raise CommandError(f"{label} stopped for a look ({row.status})")
                on_checked(row)
                continue
            queue.reconcile_row(row)
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        queue.cancel(row=row)
        raise CommandError(f"interrupted: {label} cancelled") from None
    if row.status != row.Status.SUCCEEDED:
        raise CommandError(f"{label} {row.status}: {row.error or 'no reason recorded'}")


def describe_progress(row: Any) -> str:
    """ "done/total" for any row with those counters."""
    return f"{row.done}/{row.total}"
