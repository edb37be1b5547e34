"""Fine-tune jobs: queue LoRA training of a student on a frozen trace set, follow it, register
the output model (an id of the job's project)."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.utils.timezone import now

from jobs.engine.types import FinetuneConfig, TrainProgress
from jobs.models import (
    BootstrapRun,
    FinetuneJob,
    FinetuneMetric,
    LanguageModel,
    Project,
    Status,
    TraceSet,
)
from jobs.services import artifacts, errors, model_policy, queue, trace_sets

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from jobs.engine.types import FinetuneResult

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 50


def check_student(student: LanguageModel, project: Project) -> None:
    """ValueError unless ``student`` can be fine-tuned in ``project``."""
    if student.project_id != project.pk:
        raise ValueError("The student belongs to another project.")
    model_policy.check_model(student)
    if not student.is_local:
        raise ValueError(
            f"Student {student.name!r} is a {student.kind} model; only local models fine-tune here."
        )
    if not student.fine_tunable:
        raise ValueError(f"Student {student.name!r} is not marked fine-tunable.")


def create_finetune_job(
    *,
    run: BootstrapRun,
    student: LanguageModel,
    config: FinetuneConfig,
    selection: str = FinetuneJob.Selection.APPROVED,
    multitask: bool = True,
    exclude_demos: bool = True,
    user: User,
    trace_set: TraceSet | None = None,
    max_label_share: float | None = None,
    evaluate_when_done: bool = False,
) -> FinetuneJob:
    """Queue a fine-tune on ``trace_set``, or on the ``selection`` frozen now as a new trace set
    (with ``max_label_share``, no label over that share of its rows; seeded by the config's seed).
    With ``evaluate_when_done``, its success queues an evaluation on the run's dev rows."""
    from jobs.engine.finetune import validate_config

    check_student(student, run.project)
    if selection not in FinetuneJob.Selection.values:
        raise ValueError(f"Unknown trace selection {selection!r}.")
    if trace_set is not None and trace_set.run_id != run.pk:
        raise ValueError("The trace set belongs to another run.")
    if trace_set is not None and max_label_share is not None:
        raise ValueError("A label cap applies when a selection is frozen, not to a frozen set.")
    if trace_set is None and not run.traces.for_selection(selection).exists():
        label = FinetuneJob.Selection(selection).label
        raise ValueError(f"No traces to train on: the run has no {label} traces.")
    config = dataclasses.replace(config, base_model=student.model_name)
    validate_config(config)
    with transaction.atomic():
        if trace_set is None:  # every job trains on a frozen set: its model id traces back to rows
            trace_set = trace_sets.freeze_trace_set(
                run=run,
                user=user,
                selection=selection,
                max_label_share=max_label_share,
                seed=config.seed,
            )
        selection = trace_set.rule.get("selection", selection)
        job = FinetuneJob.objects.create(
            trace_set=trace_set,
            project=run.project,
            run=run,
            student=student,
            config=trace_sets.job_config(trace_set, config),  # the knobs and their plan
            selection=selection,
            multitask=multitask,
            exclude_demos=exclude_demos,
            evaluate_when_done=evaluate_when_done,
            created_by=user,
        )
        queue.enqueue(job)
    return job


def prepare_output_dir(job: FinetuneJob) -> Path:
    """The job's artifact dir. On a first start, a leftover dir (from an older database) is moved aside."""
    path = artifacts.job_output_dir(job)
    if not job.output_dir and path.exists():
        shutil.move(path, path.with_name(f"{path.name}.stale-{int(time.time())}"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def training_rows(job: FinetuneJob) -> list[dict[str, Any]]:
    """Chat rows from the job's frozen trace set (decisions and edits as they were frozen),
    exactly as DSPy formats them."""
    if job.trace_set is None:
        raise ValueError("The job has no frozen trace set to train on.")
    return trace_sets.training_rows(
        job.trace_set, multitask=job.multitask, exclude_demos=job.exclude_demos
    )


def frozen_training_rows(job: FinetuneJob, output_dir: Path) -> list[dict[str, Any]]:
    """The rows are built once per job and kept in its dir, so a retry trains on the same data."""
    path = output_dir / "rows.jsonl"
    if path.exists():
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = training_rows(job)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    tmp.rename(path)
    return rows


def finish_finetune(job: FinetuneJob, result: FinetuneResult) -> LanguageModel | None:
    """Mark the job succeeded and register its output as a model of the same project."""
    with transaction.atomic():
        if not job.mark_finished(
            Status.SUCCEEDED,
            output_model_id=result.model_id,
            output_dir=result.output_dir,
            step=result.steps,
            total_steps=result.total_steps,
            checkpoint_step=result.steps,
            last_loss=result.final_loss,
        ):
            return None
        student = job.student
        model, _ = LanguageModel.objects.get_or_create(
            project=job.project,
            name=f"{student.name} ft-{job.pk}",
            defaults={
                "kind": LanguageModel.Kind.LOCAL,
                "model_name": result.model_id,
                "fine_tunable": True,
                "temperature": student.temperature,
                "max_tokens": student.max_tokens,
                "source_job": job,
                "created_by": job.created_by,
            },
        )
    return model


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
        # a resumed step may repeat
        FinetuneMetric.objects.bulk_create(self.metrics, ignore_conflicts=True)
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


def run_finetune(job: FinetuneJob, *, worker_name: str) -> str:
    """The worker's part: train the student on the job's frozen rows, resuming from its last
    checkpoint; register the output model in the job's project and write its program."""
    output_dir = prepare_output_dir(job)
    if not job.mark_running(worker_name=worker_name, output_dir=str(output_dir)):
        return "skipped"
    from jobs.engine.finetune import finetune
    from jobs.engine.model_store import finetuned_model_id, pick_device

    recorder = JobRecorder(job)
    try:
        model_policy.check_model(job.student)
        rows = frozen_training_rows(job, output_dir)
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
        recorder.note(f"failed: {errors.describe(exc)}")
        recorder.flush()
        job.mark_finished(Status.FAILED, error=errors.describe(exc))
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
    output = finish_finetune(job, result)  # the instance now carries the output model id
    if output is not None and job.evaluate_when_done:
        from jobs.services import evaluations

        evaluations.queue_after_finetune(job, output)
    try:
        artifacts.write_program(job)
    except Exception:  # the job has succeeded; the page writes the program on first download
        logger.exception("could not write the program of finetunejob %s", job.pk)
    return result.model_id
