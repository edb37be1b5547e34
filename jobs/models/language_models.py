"""Teacher and student LMs registered in a project (what they may be: jobs/services/model_policy.py)."""

from __future__ import annotations

from typing import cast

from django.conf import settings
from django.db import models

from jobs.engine.types import ModelKind, ModelSpec
from jobs.models.projects import Project


class LanguageModel(models.Model):
    """A teacher or student LM. API keys are never stored: ``api_key_env`` names the variable."""

    class Kind(models.TextChoices):
        LOCAL = "local"
        LITELLM = "litellm"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="models")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=Kind, default=Kind.LOCAL)
    # What the engine's ModelSpec.name gets: "smollm2", an HF dir, a .gguf path, a LiteLLM string,
    # or a fine-tuned id "bftweb:<student>:ft-<job>".
    model_name = models.CharField(max_length=500)
    api_base = models.CharField(max_length=500, blank=True)
    api_key_env = models.CharField(max_length=100, blank=True)
    fine_tunable = models.BooleanField(default=False)
    temperature = models.FloatField(default=0.0)
    max_tokens = models.PositiveIntegerField(default=256)
    source_job = models.ForeignKey(
        "FinetuneJob",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="output_models",
    )
    last_test_prompt = models.TextField(blank=True)  # what the Test button sent
    last_test_output = models.TextField(blank=True)
    last_test_error = models.TextField(blank=True)
    last_test_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="unique_model_name")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_local(self) -> bool:
        return self.kind == self.Kind.LOCAL

    @property
    def in_use(self) -> bool:
        """A teacher of a run, a student of a fine-tune, or a fine-tune's output."""
        return bool(self.source_job_id or self.teacher_runs.exists() or self.student_jobs.exists())

    def to_spec(self) -> ModelSpec:
        return ModelSpec(
            kind=cast(ModelKind, self.kind),  # the field's choices are ModelKind's values
            name=self.model_name,
            api_base=self.api_base,
            api_key_env=self.api_key_env,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
        )
