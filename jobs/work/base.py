"""The worker side's one lifecycle: claim → run → record → end, written once.

:meth:`Work.perform` is the only place where work starts, fails and finishes, as NetBox's
``JobRunner.handle`` wraps every job. A kind of work says how its row is loaded and claimed, what
its :meth:`Work.run` does, and how its row ends; the lifecycle around them is the same for all:

- **claim**: queued rows are claimed with their conditional UPDATE (``QueuedWork.mark_running``):
  a row that was cancelled, or that another worker took, is "skipped" and nothing else happens.
  Nothing touches the disk before the claim.
- **run**: the kind's ``run()`` does the work (the engine, DSPy and torch, is imported there, in
  the work horse) and records as it goes: each trace, answer or step as it completes. Its progress
  writes go through :meth:`Work.progressed`, the one throttle (``BFT_PROGRESS_EVERY_S``). It returns
  an :class:`Ending`.
- **record**: an exception ends the row failed with ``errors.describe(exc)`` (no filesystem paths,
  shortened), the same for every kind, and is raised again so RQ keeps the traceback. A
  :class:`WorkFailed` ends it failed with its own message and is not raised again: a refused file
  is an outcome, not a crash (NetBox's ``JobFailed``).
- **end**: however the work ends, :meth:`Work.flush` first writes its last progress; then the row
  moves to the ending's status (or pauses "checked") together with what must commit with it, in
  one transaction (``work_ended`` tells the webhooks); ``on_ended`` tidies what the row owns, and
  :meth:`Work.ended` follows up (a fine-tune queues its evaluation).

A claimed row is held by its ``Work`` (``row``, claimed by ``worker``) from the claim to the end:
the one place where a per-row liveness mark would be written, beside the throttled progress
(:meth:`Work.progressed`). Work that several workers share (a bootstrap in shards) would claim each
part with its own ``claim``; files are read and written only inside ``run``, after the claim.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet

from jobs.models import QueuedWork, Status
from jobs.services import errors, queue

RowT = TypeVar("RowT")
QueuedT = TypeVar("QueuedT", bound=QueuedWork)

SKIPPED = "skipped"  # what a task returns when its row was not there to claim
SUPERSEDED = "superseded"  # the row was ended elsewhere (reconciled, marked failed) while it ran


class WorkFailed(Exception):
    """Raised by a ``run()``: the row ends failed with this message, as an outcome (a file that is
    refused, say). The task returns ``result`` and raises nothing (NetBox's ``JobFailed``)."""

    def __init__(self, message: str, *, result: str = Status.FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.result = result


@dataclass(frozen=True)
class Ending:
    """How a ``run()`` ended: the row's new status (terminal, or "checked": paused for a person),
    with the fields written with it, and what the task returns (``result``; default: the status).

    ``commit`` runs inside the end's transaction once the row has ended, for what must be kept
    together with the end or not at all (a fine-tune's output model, an import's rows)."""

    status: str
    result: str = ""
    error: str = ""
    changes: Mapping[str, Any] = field(default_factory=dict)
    commit: Callable[[], None] | None = None

    @property
    def returned(self) -> str:
        return self.result or str(self.status)


class Throttle:
    """At most one write every ``every_s`` seconds (``BFT_PROGRESS_EVERY_S``), unless forced: how
    often the worker side writes progress, one rule for every kind."""

    def __init__(self, every_s: float | None = None) -> None:
        self.every_s = float(settings.BFT_PROGRESS_EVERY_S if every_s is None else every_s)
        self._last: float | None = None

    def due(self, *, force: bool = False) -> bool:
        now = time.monotonic()
        if force or self._last is None or now - self._last >= self.every_s:
            self._last = now
            return True
        return False


class Work(ABC, Generic[RowT]):
    """One piece of work on a worker, from its claim to its end (see the module's docstring).

    A kind implements :meth:`load`, :meth:`claim`, :meth:`run`, :meth:`end` and :meth:`end_failed`
    (queued rows: :class:`RowWork` does all but ``run``), and may add :meth:`flush` and
    :meth:`ended`."""

    def __init__(self, row: RowT, *, worker: str = "") -> None:
        self.row = row
        self.worker = worker or queue.current_worker_name()
        self.throttle = Throttle()

    @classmethod
    @abstractmethod
    def load(cls, pk: int) -> RowT | None:
        """The row the RQ job names, with what ``run`` reads; None when it is gone."""

    @classmethod
    def handle(cls, pk: int, **options: Any) -> str:
        """An RQ entry point's one line: load the row and perform its work."""
        row = cls.load(pk)
        if row is None:
            return SKIPPED
        return cls(row, **options).perform()

    def perform(self) -> str:
        """Claim, run, record, end: what the task returns."""
        if not self.claim():
            return SKIPPED
        try:
            ending = self.run()
            self.flush()
            ended = self.end(ending)
        except WorkFailed as exc:
            self.fail(exc.message)
            return exc.result
        except Exception as exc:
            self.fail(errors.describe(exc))
            raise  # RQ keeps the traceback in its failed registry too
        if not ended:
            return SUPERSEDED
        self.ended(ending)
        return ending.returned

    @abstractmethod
    def claim(self) -> bool:
        """Take the row for this worker; False when it is not there to take."""

    @abstractmethod
    def run(self) -> Ending:
        """The work itself, recording as it goes."""

    @abstractmethod
    def end(self, ending: Ending) -> bool:
        """Move the row as ``ending`` says; False when it had already ended elsewhere."""

    @abstractmethod
    def end_failed(self, reason: str) -> None:
        """End the row failed with ``reason``."""

    def fail(self, reason: str) -> None:
        """Record a failure: the last progress, then the row ends failed with ``reason``."""
        self.flush()
        self.end_failed(reason)

    def flush(self) -> None:
        """Write the progress not yet written (before the row ends, however it ends)."""

    def ended(self, ending: Ending) -> None:
        """After the row has ended as ``ending`` says (outside its transaction)."""

    def progressed(self, write: Callable[[], None], *, force: bool = False) -> None:
        """Call ``write`` (a progress write) if one is due: at most every BFT_PROGRESS_EVERY_S,
        or now with ``force``."""
        if self.throttle.due(force=force):
            write()


class RowWork(Work[QueuedT]):
    """Work on a queued row (``QueuedWork``): claimed and ended by its conditional UPDATEs."""

    queryset: ClassVar[QuerySet[Any]]  # the kind's rows, with what run() reads

    @classmethod
    def load(cls, pk: int) -> QueuedT | None:
        row: QueuedT | None = cls.queryset.filter(pk=pk).first()
        return row

    def claim_changes(self) -> dict[str, Any]:
        """Fields written with the claim (who claimed it, say)."""
        return {}

    def claim(self) -> bool:
        return self.row.mark_running(**self.claim_changes())

    def end(self, ending: Ending) -> bool:
        with transaction.atomic():
            if ending.status == Status.CHECKED:
                ended = self.row.mark_checked(**ending.changes)
            else:
                ended = self.row.mark_finished(ending.status, error=ending.error, **ending.changes)
            if ended and ending.commit is not None:
                ending.commit()
        if ending.status != Status.CHECKED:
            self.row.on_ended()
        return ended

    def end_failed(self, reason: str) -> None:
        queue.end_failed(self.row, reason)
