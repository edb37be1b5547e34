"""A fine-tune on a GPU worker: LoRA training of the student on the job's frozen rows, resumed from
its last checkpoint; on success its output model is registered in the job's project, its program
written and, when the job asked for one, its evaluation queued.

The job's artifact directory is touched only once the job is claimed: on a first start a leftover
directory (from an older database) is moved aside. The rows are built once per job and kept there
(``train.jsonl``, jobs/engine/output_files.py), so a retry trains on the same data.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import deque
from pathlib import Path
from typing import Any

from django.utils.timezone import now

from jobs.engine import output_files
from jobs.engine.types import FinetuneResult, TrainProgress
from jobs.models import FinetuneJob, FinetuneMetric, LanguageModel, Status
from jobs.services import artifacts, evaluations, finetunes, model_policy
from jobs.work.base import Ending, RowWork

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 50


def frozen_training_rows(job: FinetuneJob, output_dir: Path) -> list[dict[str, Any]]:
    """The rows kept in the job's dir by an earlier start (the engine writes them before its
    first step), so a retry trains on the same data; else built from the frozen trace set."""
    rows = output_files.read_rows(output_dir)
    return finetunes.training_rows(job) if rows is None else rows


def register_output_model(job: FinetuneJob, result: FinetuneResult) -> LanguageModel:
    """The job's output as a model of its project, named after the student."""
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


def finish_finetune(job: FinetuneJob, result: FinetuneResult) -> LanguageModel | None:
    """End a running job as succeeded with ``result`` and register its output model, in one
    transaction (what the worker does when training ends); None if the job had already ended."""
    work = FinetuneWork(job)
    return work.output if work.end(work.succeeded(result)) else None


class FinetuneWork(RowWork[FinetuneJob]):
    queryset = FinetuneJob.objects.select_related("student__project", "project", "run")

    def __init__(self, row: FinetuneJob, *, worker: str = "") -> None:
        super().__init__(row, worker=worker)
        self.first_start = not row.output_dir
        self.log = deque(row.log_tail.splitlines(), maxlen=LOG_TAIL_LINES)
        self.metrics: list[FinetuneMetric] = []
        self.latest: TrainProgress | None = None
        self.output: LanguageModel | None = None

    def claim_changes(self) -> dict[str, Any]:
        return {
            "worker_name": self.worker,
            "output_dir": str(artifacts.job_output_dir(self.row)),
        }

    def run(self) -> Ending:
        from jobs.engine.finetune import finetune
        from jobs.engine.model_store import finetuned_model_id, pick_device

        job = self.row
        model_policy.check_model(job.student)
        output_dir = self.prepare_output_dir()
        rows = frozen_training_rows(job, output_dir)
        device = pick_device()
        FinetuneJob.objects.filter(pk=job.pk).update(train_rows=len(rows), device=device)
        self.note(
            f"start on {job.worker_name} ({device}): {len(rows)} training rows, step {job.step}"
        )
        result = finetune(
            job.finetune_config(),
            rows,
            output_dir=output_dir,
            model_id=finetuned_model_id(job.student.model_name, str(job.pk)),
            on_progress=self.on_progress,
            should_stop=job.stop_requested,
            resume=True,
            owner=model_policy.project_owner_key(job.project),
        )
        if result.stopped_early:
            self.note(
                f"stopped at step {result.steps} of {result.total_steps}; the checkpoint is kept"
            )
            return Ending(
                Status.CANCELLED,
                changes={
                    "step": result.steps,
                    "total_steps": result.total_steps,
                    "checkpoint_step": result.steps,
                },
            )
        self.note(f"done: {result.model_id}")
        return self.succeeded(result)

    def prepare_output_dir(self) -> Path:
        """The job's artifact dir. On a first start, a leftover dir (from an older database) is
        moved aside."""
        path = artifacts.job_output_dir(self.row)
        if self.first_start and path.exists():
            shutil.move(path, path.with_name(f"{path.name}.stale-{int(time.time())}"))
        path.mkdir(parents=True, exist_ok=True)
        return path

    def succeeded(self, result: FinetuneResult) -> Ending:
        """Succeeded with ``result``; its output model is registered with the end."""

        def register() -> None:
            self.output = register_output_model(self.row, result)

        return Ending(
            Status.SUCCEEDED,
            result=result.model_id,
            changes={
                "output_model_id": result.model_id,
                "output_dir": result.output_dir,
                "step": result.steps,
                "total_steps": result.total_steps,
                "checkpoint_step": result.steps,
                "last_loss": result.final_loss,
            },
            commit=register,
        )

    def ended(self, ending: Ending) -> None:
        job = self.row
        if ending.status != Status.SUCCEEDED:
            return
        if self.output is not None and job.evaluate_when_done:
            evaluations.queue_after_finetune(job, self.output)
        try:
            artifacts.write_program(job)  # the instance carries the output model id
        except Exception:  # the job has succeeded; the page writes the program on first download
            logger.exception("could not write the program of finetunejob %s", job.pk)

    def fail(self, reason: str) -> None:
        self.note(f"failed: {reason}")
        super().fail(reason)

    # --- progress: per-step metrics and the log tail, written throttled -----------------------

    def note(self, line: str) -> None:
        self.log.append(f"{now():%H:%M:%S} {line}")

    def on_progress(self, progress: TrainProgress) -> None:
        self.latest = progress
        self.metrics.append(
            FinetuneMetric(
                job=self.row,
                step=progress.step,
                loss=progress.loss,
                learning_rate=progress.learning_rate,
                tokens_per_s=progress.tokens_per_s,
            )
        )
        if progress.log:
            self.note(progress.log)
        self.progressed(self.flush, force=progress.step >= progress.total_steps)

    def flush(self) -> None:
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
        FinetuneJob.objects.filter(pk=self.row.pk).update(**changes)
