"""Who may do what in a project. One place decides; every view calls ``get_project_for``.

Roles:
- owner: everything, including managing members;
- operator: creates and edits models, trainsets, programs, runs and jobs (and may review);
- reviewer: reads everything and reviews traces;
- viewer: reads.

A user who is not a member of a project gets a 404 for the project and for every object in it
(the project's existence is not disclosed); a member whose role is too weak gets a 403.
"""

from __future__ import annotations

from typing import Literal

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest

from jobs.models import Membership, Project

Need = Literal["view", "review", "operate", "own"]

ALLOWED: dict[str, frozenset[str]] = {
    "view": frozenset({"owner", "operator", "reviewer", "viewer"}),
    "review": frozenset({"owner", "operator", "reviewer"}),
    "operate": frozenset({"owner", "operator"}),
    "own": frozenset({"owner"}),
}


def can(role: str | None, need: Need) -> bool:
    return role is not None and role in ALLOWED[need]


def get_project_for(request: HttpRequest, slug: str, *, need: Need = "view") -> Project:
    """The project named by ``slug`` if the user may ``need`` it; 404 for non-members, 403 for weak roles.

    The returned project carries ``role`` (the user's role) and ``can_operate`` / ``can_review`` /
    ``can_own`` flags for templates.
    """
    if need not in ALLOWED:
        raise ValueError(f"unknown need {need!r}")
    user = request.user
    if not user.is_authenticated:
        raise Http404("No such project.")
    membership = (
        Membership.objects.select_related("project").filter(project__slug=slug, user=user).first()
    )
    if membership is None:
        raise Http404("No such project.")
    project = membership.project
    role = membership.role
    project.role = role  # type: ignore[attr-defined]
    project.can_operate = can(role, "operate")  # type: ignore[attr-defined]
    project.can_review = can(role, "review")  # type: ignore[attr-defined]
    project.can_own = can(role, "own")  # type: ignore[attr-defined]
    if not can(role, need):
        raise PermissionDenied(f"Your role ({role}) cannot do this in {project.name}.")
    return project


def projects_of(user: object) -> list[Project]:
    """The user's projects, by name, for the switcher."""
    if not getattr(user, "is_authenticated", False):
        return []
    return list(Project.objects.filter(memberships__user=user).order_by("name"))
