"""Queued work, one pattern for every kind: enqueue, cancel, retry, mark failed, reconcile, health.

Every queued row (a bootstrap run, a fine-tune job, a trainset import, an evaluation, a playground
try, a webhook delivery: ``queued_models()``) is a ``QueuedWork`` whose class names its ``WORK``
spec: queue, task path, timeout setting. The row is created first with
its RQ job id chosen by us, then enqueued on commit with a dotted task path (the web process never
imports torch) and explicit timeouts and TTLs (NetBox's Job.enqueue, without pickling
instances: payloads are primary keys, stored as JSON). The row, not Redis, is the record; when
Redis lost a job or a worker died, reconcile ends the row with the reason.

This module is the only code that talks to Redis and RQ.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import TYPE_CHECKING, Any

import django_rq
import redis
from django.apps import apps
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils.timezone import now
from rq import Callback, Queue, Worker, get_current_job
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from jobs.devices import REDIS_FIELD as DEVICE_FIELD
from jobs.devices import parse_device
from jobs.models import QueuedWork, Status

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

# A queued row whose RQ job is missing is left alone this long (the enqueue happens on commit).
MISSING_JOB_GRACE_S = 60
FAILURE_CALLBACK = "jobs.tasks.on_work_failure"


class QueueUnavailable(Exception):
    """Redis did not answer: pages say "queue unavailable" instead of failing."""


# --- connections -----------------------------------------------------------------------------

_inline = False


def get_queue(name: str) -> Queue:
    """One seam for the queues. We enqueue in transaction.on_commit ourselves, hence 'auto'."""
    return django_rq.get_queue(name, commit_mode="auto", is_async=not _inline)


@contextlib.contextmanager
def tasks_inline() -> Iterator[None]:
    """`distill --sync`: RQ runs each job in this process as it is enqueued (still recorded in Redis)."""
    global _inline
    _inline = True
    try:
        yield
    finally:
        _inline = False


def redis_connection() -> redis.Redis:
    return django_rq.get_connection("default")


def fetch_rq_job(rq_job_id: str, connection: redis.Redis | None = None) -> Job:
    """An RQ job read back with the queues' JSON serializer (settings.BFT_RQ_SERIALIZER)."""
    return Job.fetch(
        rq_job_id,
        connection=connection or redis_connection(),
        serializer=settings.BFT_RQ_SERIALIZER,
    )


def queued_models() -> list[type[QueuedWork]]:
    """Every kind of queued row (each concrete QueuedWork model of the app)."""
    return [m for m in apps.get_app_config("jobs").get_models() if issubclass(m, QueuedWork)]


# --- the lifecycle of a row ------------------------------------------------------------------


def end_failed(row: QueuedWork, reason: str) -> bool:
    """End an active row as failed with ``reason`` and let it tidy up. True if it was active."""
    changed = row.mark_finished(Status.FAILED, error=reason)
    row.on_ended()
    return changed


def enqueue(row: QueuedWork) -> None:
    """Put ``row`` on its queue once the current transaction commits. With Redis down, the row
    ends as failed with the reason (retry later) instead of a 500."""
    work = row.WORK
    # chosen by us: enqueue() returns nothing useful in a transaction
    rq_job_id = str(row.rq_job_id)

    def send() -> None:
        try:
            get_queue(work.queue).enqueue(
                work.task,
                row.pk,
                job_id=rq_job_id,
                job_timeout=int(getattr(settings, work.timeout_setting)),
                result_ttl=settings.BFT_RQ_RESULT_TTL_S,
                failure_ttl=settings.BFT_RQ_RESULT_TTL_S,
                on_failure=Callback(FAILURE_CALLBACK),
                description=f"{work.task}({row.pk})",
            )
        except redis.RedisError as exc:
            logger.warning("could not enqueue %s %s: %s", work.noun, row.pk, exc)
            end_failed(
                row,
                f"The queue was unavailable ({type(exc).__name__}), so this {work.noun} was "
                "never queued and nothing ran. Try again once the queue is back.",
            )

    transaction.on_commit(send)


def cancel(*, row: QueuedWork, user: User | None = None) -> QueuedWork:
    """Queued or checked: cancelled at once. Running: a cooperative stop, then a hard stop after
    the grace period."""
    if row.cancel_if_queued():
        # Tidy the queue; the worker's claim would fail anyway: the row is no longer queued.
        with contextlib.suppress(NoSuchJobError, InvalidJobOperation, redis.RedisError):
            fetch_rq_job(str(row.rq_job_id)).cancel()
        row.on_ended()
        return row
    if not row.request_cancel():
        raise ValueError(f"Only a queued or running {row.WORK.noun} can be cancelled.")
    return row


def retry(*, row: QueuedWork, user: User | None = None) -> QueuedWork:
    """The same row back to queued under a new RQ job id. Its task resumes: a bootstrap skips the
    examples it finished, a fine-tune starts from its last checkpoint."""
    with transaction.atomic():
        if not row.reset_for_retry():
            raise ValueError(
                f"Only a failed or cancelled {row.WORK.noun} can be retried "
                f"(this one is {row.status})."
            )
        enqueue(row)
    return row


def continue_checked(*, row: QueuedWork, user: User | None = None) -> QueuedWork:
    """A row paused "checked" (a run whose smoke test looked broken) goes on: queued again."""
    with transaction.atomic():
        if not row.continue_checked():
            raise ValueError(f"Only a checked {row.WORK.noun} can be continued.")
        enqueue(row)
    return row


def mark_failed(*, row: QueuedWork, user: User | None = None) -> QueuedWork:
    """An operator's verdict on a stuck row (admin): failed now; its RQ job is stopped if Redis answers."""
    if not row.mark_finished(Status.FAILED, error=f"Marked failed by {user or 'an operator'}."):
        raise ValueError(f"Only a queued or running {row.WORK.noun} can be marked failed.")
    row.on_ended()
    with contextlib.suppress(NoSuchJobError, InvalidJobOperation, redis.RedisError):
        rq_job = fetch_rq_job(str(row.rq_job_id))
        if rq_job.get_status() == JobStatus.STARTED:
            send_stop_job_command(redis_connection(), rq_job.id)
        else:
            rq_job.cancel()
    return row


def fail_from_callback(rq_job_id: str, reason: str) -> None:
    """RQ's failure callback: timeouts, dead workers and exceptions a task could not record."""
    for model in queued_models():
        for row in model._default_manager.filter(rq_job_id=rq_job_id, status__in=model.ACTIVE):
            end_failed(row, reason)


# --- reconcile -------------------------------------------------------------------------------


def _rq_job_problem(row: QueuedWork, connection: redis.Redis) -> tuple[str, str] | None:
    """(status, reason) when the row's RQ job says the row can no longer progress, else None."""
    try:
        job = fetch_rq_job(str(row.rq_job_id), connection)
    except NoSuchJobError:
        if row.updated and row.updated > now() - timedelta(seconds=MISSING_JOB_GRACE_S):
            return None
        return Status.FAILED, "The queue lost this job (its RQ job no longer exists)."
    rq_status = job.get_status(refresh=False)
    if rq_status == JobStatus.FAILED:
        result = job.latest_result()
        detail = (result.exc_string or "").strip().splitlines()[-1:] if result else []
        return Status.FAILED, "The worker failed: " + (
            detail[0] if detail else "no reason recorded"
        )
    if rq_status == JobStatus.STOPPED:
        if row.cancel_requested:
            return Status.CANCELLED, "Stopped by a hard stop after the cancel grace period."
        return Status.FAILED, "The job was stopped on the worker."
    if rq_status == JobStatus.CANCELED:
        return Status.CANCELLED, "Cancelled in the queue."
    if rq_status == JobStatus.FINISHED:
        return Status.FAILED, "The worker finished without recording a result."
    if rq_status == JobStatus.STARTED and not worker_alive(job.worker_name, connection):
        return (
            Status.FAILED,
            f"The worker {job.worker_name or '(unknown)'} died while running this job.",
        )
    return None


def worker_heartbeat_s() -> int:
    return int(getattr(settings, "BFT_WORKER_HEARTBEAT_S", 10))


def worker_alive(name: str | None, connection: redis.Redis) -> bool:
    """A busy worker heartbeats every BFT_WORKER_HEARTBEAT_S; three missed beats mean it died."""
    if not name:
        return True  # nothing to judge by
    worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + name, connection=connection)
    if worker is None:
        return False
    if worker.last_heartbeat is None:
        return True
    limit = timedelta(seconds=3 * worker_heartbeat_s() + 10)
    last = worker.last_heartbeat
    if last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    return now() - last < limit


def _cancel_overdue(row: QueuedWork) -> bool:
    grace = timedelta(seconds=settings.BFT_CANCEL_GRACE_S)
    return bool(
        row.cancel_requested and row.cancel_requested_at and row.cancel_requested_at < now() - grace
    )


def _hard_stop_overdue(row: QueuedWork, connection: redis.Redis) -> None:
    if not _cancel_overdue(row):
        return
    try:
        send_stop_job_command(connection, str(row.rq_job_id))
        logger.info("hard stop sent to %s %s", row.WORK.noun, row.pk)
    except Exception as exc:  # the job is not running any more: the next pass reconciles it
        logger.info("hard stop of %s %s not sent: %s", row.WORK.noun, row.pk, exc)


def reconcile_row(row: QueuedWork, connection: redis.Redis | None = None) -> bool:
    """End an active row whose RQ job failed, stopped, vanished or lost its worker. True if changed."""
    if not row.is_active:
        return False
    connection = connection or redis_connection()
    problem = _rq_job_problem(row, connection)
    if problem is None:
        _hard_stop_overdue(row, connection)
        return False
    status, reason = problem
    changed = row.mark_finished(status, error=reason)
    row.on_ended()
    if changed:
        logger.warning("%s %s reconciled as %s: %s", row.WORK.noun, row.pk, status, reason)
    return changed


def reconcile_if_stale(row: QueuedWork, *, stale_after_s: float) -> bool:
    """For status pages: reconcile an active row only when its heartbeat (``updated``) is older than
    ``stale_after_s`` or its cancel's grace period is over, so a healthy poll never touches Redis."""
    if not row.is_active:
        return False
    stale = row.updated is None or row.updated < now() - timedelta(seconds=stale_after_s)
    if not (stale or _cancel_overdue(row)):
        return False
    try:
        return reconcile_row(row)
    except redis.RedisError as exc:
        raise QueueUnavailable(str(exc)) from exc


def reconcile_stale() -> list[QueuedWork]:
    """Mark failed every queued/running row that can no longer progress; returns the rows changed."""
    connection = redis_connection()
    for name in settings.RQ_QUEUES:
        # RQ moves abandoned jobs (expired in the started registry) to failed, running our callback.
        StartedJobRegistry(queue=get_queue(name)).cleanup()
    changed: list[QueuedWork] = []
    for model in queued_models():
        for row in model._default_manager.filter(status__in=QueuedWork.ACTIVE):
            if reconcile_row(row, connection):
                changed.append(row)
        model.settle_stragglers()
    return changed


def queue_position(row: QueuedWork) -> tuple[int | None, int]:
    """(1-based position of the row's RQ job in its queue, or None if not in it; jobs waiting)."""
    try:
        queue = get_queue(row.WORK.queue)
        position = queue.get_job_position(str(row.rq_job_id))
        return (None if position is None else position + 1), queue.count
    except redis.RedisError as exc:
        raise QueueUnavailable(str(exc)) from exc


# At most one reconcile attempt per row per this many seconds (per web process).
RECONCILE_THROTTLE_S = 5


@dataclass
class QueueInfo:
    """The queue's view of a row, for its live page and the API."""

    available: bool = True
    error: str = ""
    position: int | None = None  # 1-based, queued rows only
    waiting: int | None = None
    reconciled: bool = False


def stale_after_s() -> float:
    """A running row's worker writes progress every ~2 s and heartbeats every BFT_WORKER_HEARTBEAT_S:
    after three missed heartbeats the row is worth a look in Redis."""
    return max(10.0, 3.0 * worker_heartbeat_s())


def queue_info(row: QueuedWork) -> QueueInfo:
    """Reconcile the row if it looks stuck (at most every RECONCILE_THROTTLE_S), and find a queued
    row's place. Never raises for Redis: a healthy running row costs no Redis call."""
    info = QueueInfo()
    if not row.is_active:
        return info
    try:
        key = f"bft:reconcile:{row._meta.label_lower}:{row.pk}:{row.rq_job_id}"
        if cache.add(key, 1, timeout=RECONCILE_THROTTLE_S):
            info.reconciled = reconcile_if_stale(row, stale_after_s=stale_after_s())
        if row.status == QueuedWork.Status.QUEUED:
            info.position, info.waiting = queue_position(row)
    except QueueUnavailable as exc:
        info.available, info.error = False, str(exc)
    return info


# --- calls that are not rows (a model test) --------------------------------------------------


def enqueue_call(
    queue_name: str,
    task: str,
    *args: Any,
    job_id: str,
    timeout_s: int,
    on_failure: str,
    description: str,
) -> None:
    """Enqueue a task now (not a row: nothing to commit first); QueueUnavailable if Redis is down."""
    try:
        get_queue(queue_name).enqueue(
            task,
            *args,
            job_id=job_id,
            job_timeout=timeout_s,
            result_ttl=settings.BFT_RQ_RESULT_TTL_S,
            failure_ttl=settings.BFT_RQ_RESULT_TTL_S,
            on_failure=Callback(on_failure),
            description=description,
        )
    except redis.RedisError as exc:
        raise QueueUnavailable(str(exc)) from exc


def current_worker_name() -> str:
    """Inside a task: the name of the worker running it (its process, outside RQ)."""
    rq_job = get_current_job()
    if rq_job is not None and rq_job.worker_name:
        return rq_job.worker_name
    return os.environ.get("RQ_WORKER_ID") or f"{socket.gethostname()}:{os.getpid()} (in-process)"


def save_job_progress(progress: dict[str, Any]) -> None:
    """Inside a task: write ``progress`` into the running RQ job's meta, where
    :func:`current_job_progress` reads it. Outside a job it does nothing. Best effort: the row's
    status is the record."""
    job = get_current_job()
    if job is None:
        return
    job.meta["progress"] = progress
    try:
        job.save_meta()
    except Exception:
        logger.warning("could not save the progress of job %s", job.id, exc_info=True)


def current_job_progress(rq_job_id: str, queue_name: str) -> dict[str, Any]:
    """The ``progress`` a task wrote into its RQ job's meta ({} when unknown or Redis is down)."""
    try:
        job = get_queue(queue_name).fetch_job(rq_job_id)
        return dict(job.get_meta(refresh=True).get("progress") or {}) if job else {}
    except Exception:  # no Redis, or the job is gone: the page shows the row without numbers
        return {}


# --- health ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    queues: list[str]
    state: str
    current_job_id: str | None
    last_heartbeat: Any
    device: dict[str, Any] = field(default_factory=dict)  # jobs/devices.py: {"kind", "label", ...}


@dataclass(frozen=True)
class QueueHealth:
    redis_ok: bool
    error: str = ""
    queues: dict[str, int] = field(default_factory=dict)  # name -> jobs waiting
    workers: list[WorkerInfo] = field(default_factory=list)

    def workers_for(self, queue_name: str) -> list[WorkerInfo]:
        return [w for w in self.workers if queue_name in w.queues]


def queue_health() -> QueueHealth:
    """Whether Redis answers, queue lengths and live workers. Never raises."""
    try:
        connection = redis.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5
        )
        connection.ping()
        queues = {name: Queue(name, connection=connection).count for name in settings.RQ_QUEUES}
        workers = [
            WorkerInfo(
                name=w.name,
                queues=w.queue_names(),
                state=str(w.get_state()),
                current_job_id=w.get_current_job_id(),
                last_heartbeat=w.last_heartbeat,
                device=parse_device(connection.hget(w.key, DEVICE_FIELD)),
            )
            for w in Worker.all(connection=connection)
            if worker_alive(w.name, connection)
        ]
    except Exception as exc:  # Redis down, misconfigured URL, ...: report, never raise
        return QueueHealth(redis_ok=False, error=f"{type(exc).__name__}: {exc}")
    return QueueHealth(redis_ok=True, queues=queues, workers=sorted(workers, key=lambda w: w.name))
