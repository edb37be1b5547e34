"""Projects (team workspaces) and who is in them with which role."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models


class Project(models.Model):
    """A team workspace. Members see everything in it and nothing outside it."""

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def role_of(self, user: Any) -> str | None:
        if not getattr(user, "is_authenticated", False):
            return None
        return self.memberships.filter(user=user).values_list("role", flat=True).first()


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        OPERATOR = "operator"  # creates runs and jobs
        REVIEWER = "reviewer"  # reviews traces
        VIEWER = "viewer"  # reads

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role, default=Role.VIEWER)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="unique_membership")
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.role}) in {self.project}"
