"""Project API keys: what a pipeline (the JSON API, the model server) authenticates with.

A key acts only inside its project. Its secret is shown once, when it is made, and stored as a
SHA-256 digest: the secret is 32 random bytes (``secrets.token_urlsafe``), so a fast unsalted hash
is enough; nothing can be guessed from it (a password hash would only slow every request). The
short ``prefix`` finds the row and is what the keys page shows. How keys are made, checked and
revoked: jobs/services/api_keys.py.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from jobs.models.projects import Membership, Project

# The roles a key's scope acts as (jobs/permissions.py decides what each role may do).
SCOPE_ROLES = {"read": Membership.Role.VIEWER, "read_write": Membership.Role.OPERATOR}
# Each role may do all that the roles before it may (view < review < operate < own).
ROLE_RANK: list[str] = [
    Membership.Role.VIEWER,
    Membership.Role.REVIEWER,
    Membership.Role.OPERATOR,
    Membership.Role.OWNER,
]


class ApiKey(models.Model):
    class Scope(models.TextChoices):
        READ = "read", "read only"
        READ_WRITE = "read_write", "read and write"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    # Shown on the keys page and the start of the key itself: bft_<prefix>_<secret>.
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)  # hex SHA-256 of the whole key
    scope = models.CharField(max_length=16, choices=Scope, default=Scope.READ)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)  # written at most once a minute
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    # Not a column: what the key may do now, set by services.api_keys.authenticate.
    effective_role: str | None = None

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.name} (bft_{self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def role(self, creator_role: str | None) -> str | None:
        """What the key may do: its scope's role, but never more than its creator may do now (a
        creator who left the project, or lost the rights, takes them from the key too)."""
        if creator_role not in ROLE_RANK:
            return None
        scope_role = SCOPE_ROLES[self.scope]
        return min(scope_role, creator_role, key=lambda role: ROLE_RANK.index(role))
