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

from dataclasses import dataclass
from typing import Literal

from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest

from jobs.http import BftRequest
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


@dataclass(frozen=True)
class ProjectAccess:
    """A member's access to a project: what views act in, and what templates ask (``access``)."""

    project: Project
    role: str

    @property
    def can_operate(self) -> bool:
        return can(self.role, "operate")

    @property
    def can_review(self) -> bool:
        return can(self.role, "review")

    @property
    def can_own(self) -> bool:
        return can(self.role, "own")


def get_project_for(request: BftRequest, slug: str, *, need: Need = "view") -> ProjectAccess:
    """The user's access to the project named by ``slug`` if they may ``need`` it; 404 for
    non-members, 403 for weak roles. Templates rendered for the request see it as ``access``
    (jobs.permissions.project_access, a context processor)."""
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
    access = ProjectAccess(membership.project, membership.role)
    if not can(access.role, need):
        raise PermissionDenied(
            f"Your role ({access.role}) cannot do this in {access.project.name}."
        )
    request.project_access = access  # for project_access below
    return access


def project_access(request: HttpRequest) -> dict[str, ProjectAccess | None]:
    """Context processor: the access get_project_for checked for this request, as ``access``."""
    return {"access": getattr(request, "project_access", None)}


def projects_of(user: User | AnonymousUser | None) -> list[Project]:
    """The user's projects, by name, for the switcher."""
    if user is None or not user.is_authenticated:
        return []
    return list(Project.objects.filter(memberships__user=user).order_by("name"))
