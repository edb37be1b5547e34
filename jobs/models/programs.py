"""Declarative DSPy programs and their immutable versions (the spec: jobs/engine/programs.py)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from jobs.engine.programs import ProgramSpec, parse_program_spec
from jobs.models.projects import Project


class Program(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="programs")
    name = models.CharField(max_length=200)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="unique_program_name")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def latest_version(self) -> ProgramVersion | None:
        return self.versions.order_by("-version").first()


class ProgramVersion(models.Model):
    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    spec = models.JSONField()  # ProgramSpec.to_dict()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["program", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["program", "version"], name="unique_program_version")
        ]

    def __str__(self) -> str:
        return f"{self.program} v{self.version}"

    def to_spec(self) -> ProgramSpec:
        return parse_program_spec(self.spec)
