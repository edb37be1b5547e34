"""Fine-tune jobs (LoRA on a frozen trace set) and their per-step metrics."""

from __future__ import annotations

from typing import Any

from django.db import models

from jobs.engine.types import FinetuneConfig
from jobs.models.language_models import LanguageModel
from jobs.models.projects import Project
from jobs.models.queued_work import QueuedWork, WorkSpec
from jobs.models.runs import BootstrapRun, TraceSelection


class FinetuneJob(QueuedWork):
    """One LoRA fine-tune of a student LM on a selection of a run's traces."""

    WORK = WorkSpec("job", "gpu", "jobs.tasks.run_finetune", "BFT_FINETUNE_TIMEOUT_S")

    Selection = TraceSelection

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="finetune_jobs")
    run = models.ForeignKey(BootstrapRun, on_delete=models.PROTECT, related_name="finetune_jobs")
    student = models.ForeignKey(
        LanguageModel, on_delete=models.PROTECT, related_name="student_jobs"
    )
    config = models.JSONField(default=dict)  # FinetuneConfig.to_dict()
    selection = models.CharField(max_length=16, choices=Selection, default=Selection.APPROVED)
    # The frozen traces (and their decisions) this job trains on; null only for jobs made before sets.
    trace_set = models.ForeignKey(
        "TraceSet", on_delete=models.PROTECT, null=True, blank=True, related_name="finetune_jobs"
    )
    multitask = models.BooleanField(default=True)
    exclude_demos = models.BooleanField(default=True)
    # On success, queue an evaluation of teacher, base student and the new student on the run's
    # dev rows (jobs/services/evaluations.py).
    evaluate_when_done = models.BooleanField(default=True)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(null=True, blank=True)
    # The newest checkpoint the worker reported on disk: a resume starts there, not at `step`.
    checkpoint_step = models.PositiveIntegerField(default=0)
    epoch = models.FloatField(null=True, blank=True)
    last_loss = models.FloatField(null=True, blank=True)
    learning_rate = models.FloatField(null=True, blank=True)
    tokens_per_s = models.FloatField(null=True, blank=True)
    eta_s = models.FloatField(null=True, blank=True)
    train_rows = models.PositiveIntegerField(default=0)
    log_tail = models.TextField(blank=True)
    output_model_id = models.CharField(max_length=500, blank=True)
    output_dir = models.CharField(max_length=1000, blank=True)
    worker_name = models.CharField(max_length=200, blank=True)
    device = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["status"], name="job_status_idx")]

    def __str__(self) -> str:
        return f"Fine-tune {self.pk} ({self.status})"

    @property
    def percent(self) -> int | None:
        if not self.total_steps:
            return None
        return min(100, round(100 * self.step / self.total_steps))

    def reset_for_retry(self, **changes: Any) -> bool:
        """The step counter goes back to the checkpoint the retry resumes from, so it never jumps."""
        return super().reset_for_retry(step=self.checkpoint_step, **changes)

    def finetune_config(self) -> FinetuneConfig:
        return FinetuneConfig.from_dict(self.config)


class FinetuneMetric(models.Model):
    """One optimizer step's numbers, for the loss chart."""

    job = models.ForeignKey(FinetuneJob, on_delete=models.CASCADE, related_name="metrics")
    step = models.PositiveIntegerField()
    loss = models.FloatField(null=True, blank=True)
    learning_rate = models.FloatField(null=True, blank=True)
    tokens_per_s = models.FloatField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "step"]
        constraints = [models.UniqueConstraint(fields=["job", "step"], name="unique_metric_step")]

    def __str__(self) -> str:
        return f"job {self.job_id} step {self.step}"
