"""Bootstrap runs (the teacher over a trainset) and their traces, one per example."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from jobs.engine.types import BootstrapConfig
from jobs.models.language_models import LanguageModel
from jobs.models.programs import ProgramVersion
from jobs.models.projects import Project
from jobs.models.queued_work import ScoredWork, WorkSpec
from jobs.models.trainsets import Trainset


class BootstrapRun(ScoredWork):
    """The teacher program run over a trainset; each example's result is a Trace."""

    WORK = WorkSpec("run", "default", "jobs.tasks.run_bootstrap", "BFT_BOOTSTRAP_TIMEOUT_S")

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="runs")
    trainset = models.ForeignKey(Trainset, on_delete=models.PROTECT, related_name="runs")
    program_version = models.ForeignKey(
        ProgramVersion, on_delete=models.PROTECT, related_name="runs"
    )
    teacher = models.ForeignKey(
        LanguageModel, on_delete=models.PROTECT, related_name="teacher_runs"
    )
    config = models.JSONField(default=dict)  # BootstrapConfig.to_dict()
    # How the teacher's demos were chosen (demo_strategy "stratified_search"): the candidate sets
    # with their train row indices, labels and scores on the held sample, the chosen one, and the
    # chosen demos' inputs (runs.demo_search_record). {} until the search ran, or with "random".
    demo_search = models.JSONField(default=dict, blank=True)
    passed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    errored = models.PositiveIntegerField(default=0)
    lm_calls = models.PositiveIntegerField(default=0)
    tokens = models.PositiveBigIntegerField(default=0)
    # Train rows left out because they lack a program input or the metric's field (or hold null
    # there): never sent to the teacher (runs.bootstrap_inputs).
    skipped = models.PositiveIntegerField(default=0)
    # Review rule: a trace counts as approved once this many reviewers approve it (jobs/services/review.py).
    required_approvals = models.PositiveSmallIntegerField(default=1)
    # The smoke test (jobs/services/smoke.py): the sample's figures, the forecast for the whole
    # run, and why it looks broken ("problems"; a run with problems stops "checked"). {}: none ran.
    smoke = models.JSONField(default=dict, blank=True)
    # Offline re-scoring: the metric version in use (1: the run's first metric) and the earlier
    # ones, [{"version", "metric", "passed", "by", "at"}].
    metric_version = models.PositiveSmallIntegerField(default=1)
    metric_history = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["status"], name="run_status_idx")]

    def __str__(self) -> str:
        return f"Run {self.pk} ({self.status})"

    def bootstrap_config(self) -> BootstrapConfig:
        return BootstrapConfig.from_dict(self.config)

    @property
    def teacher_temperature(self) -> float:
        """What the teacher sampled at: this run's setting, else the model's own."""
        temperature = self.bootstrap_config().temperature
        return self.teacher.temperature if temperature is None else temperature


def effective_outputs(
    outputs: dict[str, Any] | None, edited_outputs: dict[str, Any] | None
) -> dict[str, Any]:
    """What a trace says after review: a reviewer's edited value, else the teacher's output."""
    return {**(outputs or {}), **(edited_outputs or {})}


class TraceSelection(models.TextChoices):
    """Which of a run's traces a fine-tune trains on (rejected ones never)."""

    APPROVED = "approved"
    PASSING = "passing", "passing (passed and parsed)"
    ALL = "all", "all parsed"


class TraceQuerySet(models.QuerySet["Trace"]):
    def approved(self) -> TraceQuerySet:
        return self.filter(review_state=Trace.ReviewState.APPROVED)

    def passing(self) -> TraceQuerySet:
        return self.filter(passed=True, parsed=True)

    def parsed(self) -> TraceQuerySet:
        return self.filter(parsed=True)

    def for_selection(self, selection: str) -> TraceQuerySet:
        """The traces a fine-tune trains on: approved, passing, or all parsed (rejected never)."""
        if selection == TraceSelection.APPROVED:
            return self.approved().parsed()
        not_rejected = self.exclude(review_state=Trace.ReviewState.REJECTED)
        if selection == TraceSelection.PASSING:
            return not_rejected.passing()
        if selection == TraceSelection.ALL:
            return not_rejected.parsed()
        raise ValueError(f"unknown trace selection {selection!r}")


class Trace(models.Model):
    """One bootstrapped example: the teacher's record of it, its score, and its review."""

    class ReviewState(models.TextChoices):
        UNREVIEWED = "unreviewed"
        APPROVED = "approved"
        REJECTED = "rejected"

    run = models.ForeignKey(BootstrapRun, on_delete=models.CASCADE, related_name="traces")
    example_index = models.PositiveIntegerField()
    split = models.CharField(max_length=8, default="train")
    inputs = models.JSONField(default=dict)
    labels = models.JSONField(default=dict)
    outputs = models.JSONField(default=dict)
    # Per predictor: {"predictor", "signature": {...}, "inputs", "outputs", "messages"}
    calls = models.JSONField(default=list)
    score = models.FloatField(null=True, blank=True)
    passed = models.BooleanField(default=False)
    parsed = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    review_state = models.CharField(
        max_length=16, choices=ReviewState, default=ReviewState.UNREVIEWED
    )
    edited_outputs = models.JSONField(null=True, blank=True)
    # edited_outputs is not null: a column of its own so the review queue's index covers it.
    edited = models.BooleanField(default=False)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    # Review workflow (jobs/services/review.py): the state above is recomputed from TraceDecision rows.
    approvals = models.PositiveSmallIntegerField(default=0)
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    lm_calls = models.PositiveIntegerField(default=0)
    tokens = models.PositiveIntegerField(default=0)
    elapsed_s = models.FloatField(default=0.0)
    # Best-of-N (BootstrapConfig.retries): which attempt this trace is (1: the first answer),
    # and what the earlier, failed attempts answered.
    attempt = models.PositiveSmallIntegerField(default=1)
    attempts = models.JSONField(default=list, blank=True)
    # Offline re-scoring (jobs/services/rescoring.py): this trace's earlier scores, one
    # {"version", "score", "passed"} per metric it was scored with before the current one.
    score_history = models.JSONField(default=list, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    objects = TraceQuerySet.as_manager()

    class Meta:
        ordering = ["run", "example_index"]
        constraints = [
            models.UniqueConstraint(fields=["run", "example_index"], name="unique_trace_example")
        ]
        indexes = [
            models.Index(fields=["run", "passed"], name="trace_passed_idx"),
            models.Index(fields=["run", "review_state", "example_index"], name="trace_review_idx"),
            models.Index(fields=["run", "score"], name="trace_score_idx"),
            models.Index(
                fields=["run", "assigned_to", "review_state", "example_index"],
                name="trace_assigned_idx",
            ),
            # Covers the review queue's counts, filters, histogram and page ids without reading the
            # rows (on SQLite a row is ≈ 3 KB of JSON: a scan reads the whole table).
            models.Index(
                fields=[
                    "run",
                    "review_state",
                    "parsed",
                    "passed",
                    "edited",
                    "score",
                    "assigned_to",
                    "example_index",
                ],
                name="trace_review_cover_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"Trace {self.example_index} of run {self.run_id}"

    def as_record(self) -> dict[str, Any]:
        """The engine's trace dict (the keys of the on_trace record)."""
        return {
            "example_index": self.example_index,
            "inputs": self.inputs,
            "labels": self.labels,
            "outputs": self.outputs,
            "calls": self.calls,
            "score": self.score,
            "passed": self.passed,
            "parsed": self.parsed,
            "error": self.error,
            "lm_calls": self.lm_calls,
            "tokens": self.tokens,
            "elapsed_s": self.elapsed_s,
        }
