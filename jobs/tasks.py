"""RQ entry points: load the row, call the engine, record the outcome. Nothing else.

Tasks take primary keys, never instances. The engine (DSPy, torch) is imported inside the task
bodies, so a worker's parent process never imports torch before it forks a work horse.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections import deque
from typing import Any

from django.conf import settings
from django.utils.timezone import now

from jobs import model_policy, outputs, services
from jobs.engine.types import TrainProgress
from jobs.models import BootstrapRun, FinetuneJob, FinetuneMetric, LanguageModel, Status

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 50
# What a page shows of an error: provider error bodies and library messages can be long.
ERROR_MAX_CHARS = 500
TEST_OUTPUT_MAX_CHARS = 2000
# An absolute filesystem path (not the path of a URL): pages never show where files live.
_PATH_RE = re.compile(r"(?<![\w:/.])(?:/[\w.@+~-]+)+/?")


def public_text(text: str, *, limit: int = ERROR_MAX_CHARS) -> str:
    """``text`` without filesystem paths (each becomes its last part), at most ``limit`` chars."""
    text = _PATH_RE.sub(lambda m: "…/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(exc: BaseException) -> str:
    """An exception as pages show it: its type and message, no paths, shortened."""
    return public_text(f"{type(exc).__name__}: {exc}".rstrip(": "))


def worker_name() -> str:
    from rq import get_current_job

    rq_job = get_current_job()
    if rq_job is not None and rq_job.worker_name:
        return rq_job.worker_name
    return os.environ.get("RQ_WORKER_ID") or f"{socket.gethostname()}:{os.getpid()} (in-process)"


class RunRecorder:
    """Stores each trace as it completes; refreshes the run's counters at most every few seconds."""

    def __init__(self, run: BootstrapRun) -> None:
        self.run = run
        self.every_s = settings.BFT_PROGRESS_EVERY_S
        self._last = 0.0

    def on_trace(self, record: dict[str, Any]) -> None:
        if record.get("error"):
            record = {**record, "error": public_text(record["error"])}
        services.record_traces(self.run, [record])
        if time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            services.refresh_run_counts(self.run)


def run_bootstrap(run_pk: int) -> str:
    run = BootstrapRun.objects.select_related(
        "teacher__project", "program_version", "trainset"
    ).get(pk=run_pk)
    if not run.mark_running():
        return "skipped"
    from jobs.engine.bootstrap import bootstrap

    examples, demos, skip = services.bootstrap_inputs(run)
    recorder = RunRecorder(run)
    try:
        model_policy.check_model(run.teacher)
        bootstrap(
            program=run.program_version.to_spec(),
            teacher=run.teacher.to_spec(),
            examples=examples,
            metric=run.metric_spec(),
            config=run.bootstrap_config(),
            demos=demos,
            skip=skip,
            on_trace=recorder.on_trace,
            should_stop=run.stop_requested,
        )
    except Exception as exc:
        services.refresh_run_counts(run)
        run.mark_finished(Status.FAILED, error=describe(exc))
        raise  # RQ keeps the traceback in its failed registry too
    services.refresh_run_counts(run)
    status = Status.CANCELLED if run.stop_requested() else Status.SUCCEEDED
    run.mark_finished(status)
    return status


class JobRecorder:
    """Progress, per-step metrics and the log tail, written at most every few seconds."""

    def __init__(self, job: FinetuneJob) -> None:
        self.job = job
        self.every_s = settings.BFT_PROGRESS_EVERY_S
        self.log = deque(job.log_tail.splitlines(), maxlen=LOG_TAIL_LINES)
        self.metrics: list[FinetuneMetric] = []
        self.latest: TrainProgress | None = None
        self._last = 0.0

    def note(self, line: str) -> None:
        self.log.append(f"{now():%H:%M:%S} {line}")

    def __call__(self, progress: TrainProgress) -> None:
        self.latest = progress
        self.metrics.append(
            FinetuneMetric(
                job=self.job,
                step=progress.step,
                loss=progress.loss,
                learning_rate=progress.learning_rate,
                tokens_per_s=progress.tokens_per_s,
            )
        )
        if progress.log:
            self.note(progress.log)
        if time.monotonic() - self._last >= self.every_s or progress.step >= progress.total_steps:
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        FinetuneMetric.objects.bulk_create(
            self.metrics, ignore_conflicts=True
        )  # a resumed step may repeat
        self.metrics = []
        changes: dict[str, Any] = {"log_tail": "\n".join(self.log), "updated": now()}
        if p := self.latest:
            changes.update(
                step=p.step,
                total_steps=p.total_steps,
                checkpoint_step=p.checkpoint_step,
                epoch=p.epoch,
                learning_rate=p.learning_rate,
                tokens_per_s=p.tokens_per_s,
                eta_s=p.eta_s,
            )
            if p.loss is not None:
                changes["last_loss"] = p.loss
        FinetuneJob.objects.filter(pk=self.job.pk).update(**changes)


def run_finetune(job_pk: int) -> str:
    job = FinetuneJob.objects.select_related("student__project", "project", "run").get(pk=job_pk)
    output_dir = services.prepare_output_dir(job)
    if not job.mark_running(worker_name=worker_name(), output_dir=str(output_dir)):
        return "skipped"
    from jobs.engine.finetune import finetune
    from jobs.engine.model_store import finetuned_model_id, pick_device

    recorder = JobRecorder(job)
    try:
        model_policy.check_model(job.student)
        rows = services.frozen_training_rows(job, output_dir)
        device = pick_device()
        FinetuneJob.objects.filter(pk=job.pk).update(train_rows=len(rows), device=device)
        recorder.note(
            f"start on {job.worker_name} ({device}): {len(rows)} training rows, step {job.step}"
        )
        result = finetune(
            job.finetune_config(),
            rows,
            output_dir=output_dir,
            model_id=finetuned_model_id(job.student.model_name, str(job.pk)),
            on_progress=recorder,
            should_stop=job.stop_requested,
            resume=True,
            owner=model_policy.project_owner_key(job.project),
        )
    except Exception as exc:
        recorder.note(f"failed: {describe(exc)}")
        recorder.flush()
        job.mark_finished(Status.FAILED, error=describe(exc))
        raise
    if result.stopped_early:
        recorder.note(
            f"stopped at step {result.steps} of {result.total_steps}; the checkpoint is kept"
        )
        recorder.flush()
        job.mark_finished(
            Status.CANCELLED,
            step=result.steps,
            total_steps=result.total_steps,
            checkpoint_step=result.steps,
        )
        return "cancelled"
    recorder.note(f"done: {result.model_id}")
    recorder.flush()
    services.finish_finetune(job, result)  # the instance now carries the output model id
    try:
        outputs.write_program(job)
    except Exception:  # the job has succeeded; the page writes the program on first download
        logger.exception("could not write the program of finetunejob %s", job.pk)
    return result.model_id


def run_model_test(model_pk: int) -> str:
    model = LanguageModel.objects.select_related("project").get(pk=model_pk)
    from jobs.engine.local_lm import try_model

    try:
        model_policy.check_model(model)
        output = try_model(model.to_spec(), services.MODEL_TEST_PROMPT)
    except Exception as exc:
        LanguageModel.objects.filter(pk=model_pk).update(
            last_test_output="", last_test_error=describe(exc), last_test_at=now()
        )
        return "error"
    LanguageModel.objects.filter(pk=model_pk).update(
        last_test_output=output[:TEST_OUTPUT_MAX_CHARS], last_test_error="", last_test_at=now()
    )
    return "ok"


def _failure_reason(exc_type: type[BaseException], exc: BaseException) -> str:
    if exc_type.__name__ == "AbandonedJobError":
        return "The worker died while running this job (RQ abandoned it)."
    return describe(exc)


def on_work_failure(
    rq_job: Any, connection: Any, exc_type: type[BaseException], exc: BaseException, tb: Any
) -> None:
    """Timeouts, abandoned jobs and exceptions the task could not record itself (rq passes these positionally)."""
    reason = _failure_reason(exc_type, exc)
    for model in (BootstrapRun, FinetuneJob):
        model.objects.filter(rq_job_id=rq_job.id, status__in=model.ACTIVE).update(
            status=Status.FAILED, error=reason, finished=now(), updated=now()
        )


def on_model_test_failure(
    rq_job: Any, connection: Any, exc_type: type[BaseException], exc: BaseException, tb: Any
) -> None:
    LanguageModel.objects.filter(pk=rq_job.args[0]).update(
        last_test_output="", last_test_error=_failure_reason(exc_type, exc), last_test_at=now()
    )
