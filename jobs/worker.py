"""bftweb's RQ worker: rq's forking ``Worker``, with a parent process that never touches torch.

Why forking: every job runs in a fresh work horse, so a fine-tune's GPU/CPU memory goes back to the
system when the horse exits and a crashed job cannot poison the next one. The catch is that a horse
forked from a parent that has *used* torch deadlocks, so the parent only dequeues, heartbeats and
reconciles: tasks import the engine inside their bodies, in the horse. It reads jobs with RQ's JSON
serializer (payloads are primary keys), never pickle. Start it as ``make run`` and the README do::

    python manage.py rqworker default gpu --worker-class jobs.worker.BftWorker
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

import redis
from django.conf import settings
from django.db import connections
from rq import Worker
from rq.worker import WorkerStatus

from jobs import devices


def die_with_parent(parent_pid: int | None) -> None:
    """Ask Linux to SIGKILL this process when its parent exits (a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if parent_pid and os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


class BftWorker(Worker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Jobs are stored as JSON (settings.BFT_RQ_SERIALIZER): never unpickle what Redis holds,
        # whatever --serializer `rqworker` was given (its default is pickle).
        kwargs["serializer"] = settings.BFT_RQ_SERIALIZER
        # A busy worker heartbeats this often, so queue.worker_alive() spots a dead one quickly.
        kwargs.setdefault("job_monitoring_interval", settings.BFT_WORKER_HEARTBEAT_S)
        kwargs.setdefault("maintenance_interval", settings.BFT_RECONCILE_EVERY_S)
        super().__init__(*args, **kwargs)
        # nvidia-smi and /proc: torch stays out of this process.
        self.device = devices.describe_device()

    @property
    def dequeue_timeout(self) -> int:
        """An idle worker wakes (and heartbeats, and runs its maintenance) every heartbeat interval
        instead of every worker_ttl - 15 s (405 s): otherwise queue.worker_alive(), which allows
        three missed beats, would call every idle worker dead and the jobs page would list none."""
        return max(1, min(super().dequeue_timeout, int(settings.BFT_WORKER_HEARTBEAT_S)))

    def serialize(self) -> dict[str, Any]:
        """rq's birth (and re-birth) data, plus the device, for the jobs page's worker list."""
        return {**super().serialize(), devices.REDIS_FIELD: json.dumps(self.device)}

    @contextlib.contextmanager
    def _tolerate_redis_outage(self, what: str) -> Iterator[None]:
        """While a horse trains, Redis may restart: rq would let the ConnectionError end the worker
        (and, through die_with_parent, the training). Skip this write instead; the next one retries."""
        try:
            yield
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            self.log.warning("Redis unavailable (%s skipped, the job goes on): %s", what, exc)

    def maintain_heartbeats(self, job: Any) -> None:
        with self._tolerate_redis_outage("heartbeat"):
            super().maintain_heartbeats(job)

    def set_current_job_working_time(self, *args: Any, **kwargs: Any) -> None:
        with self._tolerate_redis_outage("working time"):
            super().set_current_job_working_time(*args, **kwargs)

    def set_state(self, *args: Any, **kwargs: Any) -> None:
        with self._tolerate_redis_outage("state"):
            super().set_state(*args, **kwargs)

    def execute_job(self, job: Any, queue: Any) -> None:
        if "torch" in sys.modules:
            # Something imported torch in this process: forking could hang the horse, so run the
            # job here instead, like rq's SimpleWorker (safe, but its memory stays with us).
            self.log.warning(
                "torch is loaded in the worker process: running %s without forking", job.id
            )
            self.prepare_execution(job)
            self.perform_job(job, queue)
            self.set_state(WorkerStatus.IDLE)
            return
        connections.close_all()  # the horse must open its own database connections
        super().execute_job(job, queue)

    def main_work_horse(self, job: Any, queue: Any) -> None:
        """In the horse: die with the worker. rq puts the horse in its own process group, so a
        worker killed outright (SIGKILL, OOM) would otherwise leave it training on, unseen, while
        the job is reconciled as failed and retried next to it."""
        die_with_parent(self.pid)
        super().main_work_horse(job, queue)

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        from jobs.services import queue

        try:
            changed = queue.reconcile_stale()
        except Exception:
            self.log.exception("reconcile_stale failed")
        else:
            for row in changed:
                self.log.warning(
                    "reconciled %s %s: %s (%s)", row._meta.model_name, row.pk, row.status, row.error
                )
        finally:
            connections.close_all()
