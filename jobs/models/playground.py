"""Playground tries: a program version run on one input by up to four models, side by side."""

from __future__ import annotations

from typing import Any

from django.db import models

from jobs.models.programs import ProgramVersion
from jobs.models.projects import Project
from jobs.models.queued_work import QueuedWork, WorkSpec
from jobs.models.trainsets import TrainsetRow

MAX_MODELS = 4


class PlaygroundTry(QueuedWork):
    """One input (typed, or a trainset row with its gold label) answered by each chosen model on a
    worker (jobs/work/playground.py); stored with who ran it."""

    WORK = WorkSpec("try", "default", "jobs.tasks.run_playground_try", "BFT_MODEL_TEST_TIMEOUT_S")

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="playground_tries")
    program_version = models.ForeignKey(
        ProgramVersion, on_delete=models.PROTECT, related_name="playground_tries"
    )
    # The chosen models: [{"pk", "name"}], in the order they are shown.
    chosen = models.JSONField(default=list)
    inputs = models.JSONField(default=dict)
    row = models.ForeignKey(
        TrainsetRow, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    labels = models.JSONField(default=dict, blank=True)  # the picked row's gold values
    # One per model, as each finishes: {"model", "name", "outputs", "reasoning", "raw", "error",
    # "latency_s", "tokens_in", "tokens_out", "passed"}.
    results = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"Try {self.pk} ({self.status})"

    @property
    def answers(self) -> list[tuple[str, dict[str, Any] | None]]:
        """Each chosen model's name and its result (None until it has answered)."""
        by_model = {result["model"]: result for result in self.results}
        return [(chosen["name"], by_model.get(chosen["pk"])) for chosen in self.chosen]
