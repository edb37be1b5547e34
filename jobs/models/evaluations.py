"""Evaluations: several candidates (a model and how it is prompted) scored on the same rows.

An Evaluation is queued work like a run. Each candidate's answer to each row is an
EvaluationResult, stored as it completes, so a retry skips finished rows and the comparison page
(jobs/services/comparisons.py, jobs/engine/comparison.py) reads only stored results.
"""

from __future__ import annotations

from django.db import models

from jobs.models.finetunes import FinetuneJob
from jobs.models.language_models import LanguageModel
from jobs.models.programs import ProgramVersion
from jobs.models.projects import Project
from jobs.models.queued_work import ScoredWork, WorkSpec
from jobs.models.runs import BootstrapRun
from jobs.models.trainsets import Trainset


class Evaluation(ScoredWork):
    """A program version scored with a metric on a set of trainset rows, once per candidate."""

    WORK = WorkSpec(
        "evaluation", "default", "jobs.tasks.run_evaluation", "BFT_EVALUATION_TIMEOUT_S"
    )

    class Split(models.TextChoices):
        DEV = "dev"
        TRAIN = "train"
        ALL = "all", "all rows"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="evaluations")
    program_version = models.ForeignKey(
        ProgramVersion, on_delete=models.PROTECT, related_name="evaluations"
    )
    trainset = models.ForeignKey(Trainset, on_delete=models.PROTECT, related_name="evaluations")
    split = models.CharField(max_length=8, choices=Split, default=Split.DEV)
    # The run whose teacher (and demos) it compares against, and the fine-tune that queued it.
    run = models.ForeignKey(
        BootstrapRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="evaluations"
    )
    finetune_job = models.ForeignKey(
        FinetuneJob, on_delete=models.SET_NULL, null=True, blank=True, related_name="evaluations"
    )
    num_threads = models.PositiveSmallIntegerField(default=8)
    limit = models.PositiveIntegerField(null=True, blank=True)  # at most this many rows
    rows = models.PositiveIntegerField(default=0)  # rows each candidate answers
    # The comparison's headline, written when the evaluation ends (jobs/work/evaluations.py):
    # per candidate {"label", "passed", "n", "score", "collapsed"} and the student-vs-teacher words.
    verdict = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["status"], name="evaluation_status_idx")]

    def __str__(self) -> str:
        return f"Evaluation {self.pk} ({self.status})"


class EvaluationCandidate(models.Model):
    """One model, prompted one way, in an evaluation."""

    class Role(models.TextChoices):
        TEACHER = "teacher"
        BASE = "base", "base student"
        STUDENT = "student", "fine-tuned student"
        MODEL = "model"

    class Prompting(models.TextChoices):
        RUN_DEMOS = "run_demos", "with the run's demos"
        ZERO_SHOT = "zero_shot", "zero-shot"

    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="candidates")
    position = models.PositiveSmallIntegerField(default=0)
    role = models.CharField(max_length=16, choices=Role, default=Role.MODEL)
    language_model = models.ForeignKey(
        LanguageModel, on_delete=models.PROTECT, related_name="evaluation_candidates"
    )
    prompting = models.CharField(max_length=16, choices=Prompting, default=Prompting.ZERO_SHOT)
    demos = models.JSONField(default=list, blank=True)  # the labeled demos it is shown
    temperature = models.FloatField(default=0.0)
    # LiteLLM's price per token when it knows the model (None: unknown, e.g. a local model).
    input_cost_per_token = models.FloatField(null=True, blank=True)
    output_cost_per_token = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)  # the candidate could not run at all (model missing...)

    class Meta:
        ordering = ["evaluation", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["evaluation", "position"], name="unique_candidate_position"
            )
        ]

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        if self.role == self.Role.MODEL:
            return f"{self.language_model.name} ({self.get_prompting_display()})"
        return f"{self.get_role_display()}: {self.language_model.name}"


class EvaluationResult(models.Model):
    """One candidate's answer to one row, as the engine's evaluator returned it."""

    candidate = models.ForeignKey(
        EvaluationCandidate, on_delete=models.CASCADE, related_name="results"
    )
    row_index = models.PositiveIntegerField()  # TrainsetRow.index
    inputs = models.JSONField(default=dict)
    labels = models.JSONField(default=dict)
    outputs = models.JSONField(default=dict)
    reasoning = models.TextField(blank=True)
    raw = models.TextField(blank=True)  # the LM's text when it did not parse
    score = models.FloatField(default=0.0)
    passed = models.BooleanField(default=False)
    parsed = models.BooleanField(default=True)
    error = models.TextField(blank=True)
    latency_s = models.FloatField(default=0.0)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    lm_calls = models.PositiveIntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["candidate", "row_index"]
        constraints = [
            models.UniqueConstraint(fields=["candidate", "row_index"], name="unique_result_row")
        ]

    def __str__(self) -> str:
        return f"candidate {self.candidate_id} row {self.row_index}"
