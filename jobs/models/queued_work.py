"""Queued work: rows that an RQ job works on, each an explicit state machine.

Transitions are single conditional UPDATEs, so a worker claiming a row and a user cancelling it
cannot both win. How rows are enqueued, cancelled, retried and reconciled: jobs/services/queue.py;
how a worker claims, runs and ends one: jobs/work/base.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from django.conf import settings
from django.db import models
from django.dispatch import Signal
from django.utils.timezone import now

from jobs.engine.types import MetricSpec

# Sent (sender: the row's model; row, status) whenever a row reaches succeeded, failed or cancelled,
# by whichever transition got it there. Receivers that act on it do so on commit (webhooks).
work_ended = Signal()


class Status(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Paused for a person: a run whose smoke test looks broken waits here to be continued (back to
    # queued) or cancelled. Neither active nor terminal: no worker holds it, reconcile skips it.
    CHECKED = "checked"


@dataclass(frozen=True)
class WorkSpec:
    """How one kind of queued row runs: every kind goes through jobs/services/queue.py with this.

    ``task`` is the dotted path of its RQ entry point in jobs/tasks.py (a string, so the web
    process never imports what the task needs); ``timeout_setting`` names the setting that holds
    its job timeout in seconds.
    """

    noun: str  # how messages name a row: "run", "job", "import"
    queue: str
    task: str
    timeout_setting: str


class QueuedWork(models.Model):
    """A row that an RQ job works on. The row, not Redis, is the record of its state."""

    WORK: ClassVar[WorkSpec]
    Status = Status
    ACTIVE = frozenset({Status.QUEUED, Status.RUNNING})
    TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
    RETRYABLE = frozenset({Status.FAILED, Status.CANCELLED})

    status = models.CharField(max_length=16, choices=Status, default=Status.QUEUED)
    rq_job_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    cancel_requested = models.BooleanField(default=False)
    # When the cancel was asked for: it starts the hard-stop grace period.
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def can_retry(self) -> bool:
        return self.status in self.RETRYABLE

    def _transition(self, from_states: frozenset[str] | set[str], **changes: Any) -> bool:
        """One conditional UPDATE; on success the instance reflects the change."""
        changes["updated"] = now()
        qs = type(self)._default_manager.filter(pk=self.pk, status__in=from_states)
        if qs.update(**changes) != 1:
            return False
        for name, value in changes.items():
            setattr(self, name, value)
        if changes.get("status") in self.TERMINAL:
            work_ended.send_robust(type(self), row=self, status=changes["status"])
        return True

    def mark_running(self, **changes: Any) -> bool:
        """Claim a queued row. False if it was cancelled or another worker got there first."""
        return self._transition({Status.QUEUED}, status=Status.RUNNING, started=now(), **changes)

    def mark_finished(self, status: str, *, error: str = "", **changes: Any) -> bool:
        """End an active row. False if it had already ended (e.g. reconciled or cancelled)."""
        assert status in self.TERMINAL  # a programming error, not user input
        return self._transition(self.ACTIVE, status=status, error=error, finished=now(), **changes)

    def mark_checked(self, **changes: Any) -> bool:
        """A running row pauses for a person (its smoke test looks broken): no worker holds it."""
        return self._transition({Status.RUNNING}, status=Status.CHECKED, **changes)

    def continue_checked(self, **changes: Any) -> bool:
        """A person looked and goes on: back to queued, under a new RQ job id."""
        return self._transition(
            {Status.CHECKED}, status=Status.QUEUED, rq_job_id=uuid.uuid4(), **changes
        )

    def cancel_if_queued(self) -> bool:
        """Cancel at once a row no worker holds: queued, or checked (paused for a person)."""
        return self._transition(
            {Status.QUEUED, Status.CHECKED},
            status=Status.CANCELLED,
            cancel_requested=True,
            cancel_requested_at=now(),
            finished=now(),
        )

    def request_cancel(self) -> bool:
        """Ask the worker to stop cooperatively at its next check (the first request counts)."""
        if self.cancel_requested:
            return self.is_active
        return self._transition(self.ACTIVE, cancel_requested=True, cancel_requested_at=now())

    def reset_for_retry(self, **changes: Any) -> bool:
        """Back to queued, under a new RQ job id, from failed or cancelled only."""
        return self._transition(
            self.RETRYABLE,
            **changes,
            status=Status.QUEUED,
            rq_job_id=uuid.uuid4(),
            cancel_requested=False,
            cancel_requested_at=None,
            error="",
            started=None,
            finished=None,
        )

    def on_ended(self) -> None:
        """Called whenever the row ends, by its work (jobs/work/base.py) or from outside it
        (reconciled, failed by a callback, marked failed, never queued): tidy what the row owns.
        Safe to repeat."""

    @classmethod
    def settle_stragglers(cls) -> None:
        """For reconcile: tidy what rows of this kind left behind when a process died between
        ending a row and :meth:`on_ended`. Default: nothing."""

    def stop_requested(self) -> bool:
        """Read from the database: the worker's should_stop()."""
        return type(self)._default_manager.filter(pk=self.pk, cancel_requested=True).exists()


class ScoredWork(QueuedWork):
    """Queued work that scores rows with a metric (a bootstrap run, an evaluation): the metric,
    and the progress in rows."""

    metric = models.JSONField()  # MetricSpec.to_dict()
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)

    class Meta:
        abstract = True

    @property
    def percent(self) -> int | None:
        if not self.total:
            return None
        return min(100, round(100 * self.done / self.total))

    def metric_spec(self) -> MetricSpec:
        return MetricSpec.from_dict(self.metric)
