"""Who may do what through the API: the same roles as the pages (jobs/permissions.py).

A request acts in the project its URL names (``/api/v1/projects/<slug>/...``):
- with an API key, only in the key's own project (any other answers 404, as for a non-member),
  as the role of its scope (read: viewer, read_write: operator) capped by its creator's role;
- with a session, as the user's membership role (non-members get 404).
Reading needs "view"; each view names what its writes need ("operate", or "review" for review
decisions). A role too weak gets 403: a read-only key on any write, for instance.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, permissions
from rest_framework.request import Request

from jobs.models import ApiKey, Membership
from jobs.permissions import ALLOWED, Need, ProjectAccess, can


def access_for(request: Request, slug: str) -> ProjectAccess:
    """The request's access to the project ``slug``; NotFound when it may not see it at all."""
    key = request.auth if isinstance(request.auth, ApiKey) else None
    if key is not None:
        if key.project.slug != slug or key.effective_role is None:
            raise exceptions.NotFound("No such project.")
        return ProjectAccess(key.project, key.effective_role)
    membership = (
        Membership.objects.select_related("project")
        .filter(project__slug=slug, user=request.user)
        .first()
        if request.user.is_authenticated
        else None
    )
    if membership is None:
        raise exceptions.NotFound("No such project.")
    return ProjectAccess(membership.project, membership.role)


def need_of(request: Request, view: Any) -> Need:
    """What the view's current action needs: "view" to read, else its ``needs`` entry or
    ``write_need`` (default "operate")."""
    action = getattr(view, "action", None)
    needs: dict[str, Need] = getattr(view, "needs", {})
    if action in needs:
        return needs[action]
    if request.method in permissions.SAFE_METHODS:
        return "view"
    need: Need = getattr(view, "write_need", "operate")
    return need


class ProjectPermission(permissions.BasePermission):
    """Resolves the URL's project for the view (``view.access``) and checks the role."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False  # 401 with the Bearer challenge
        access = access_for(request, view.kwargs["slug"])
        view.access = access
        request._request.project_access = access  # what the pages' context processor reads
        need = need_of(request, view)
        if need not in ALLOWED:
            raise ValueError(f"unknown need {need!r}")
        if not can(access.role, need):
            how = "This API key is read-only" if _read_only_key(request) else "Your role"
            raise exceptions.PermissionDenied(
                f"{how} ({access.role}) cannot do this in {access.project.name}."
            )
        return True


def _read_only_key(request: Request) -> bool:
    return isinstance(request.auth, ApiKey) and request.auth.scope == ApiKey.Scope.READ
