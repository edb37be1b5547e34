"""Projects: creating one, who an owner may add, and the rule that a project always keeps an owner.

Changing an owner's role or removing an owner locks the project's owner memberships
(``SELECT ... FOR UPDATE``, in pk order) inside a transaction before it counts them. Two owners
demoting each other at once therefore cannot both succeed: the second waits for the first to
commit, then finds it is no longer an owner (or is the last one) and is refused.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet

from jobs.models import LanguageModel, Membership, Project

BUNDLED_MODEL = {"name": "smollm2", "model_name": "smollm2"}

LAST_OWNER_MESSAGE = "A project needs at least one owner: make someone else owner first."


class LastOwnerError(ValueError):
    def __init__(self) -> None:
        super().__init__(LAST_OWNER_MESSAGE)


def users_visible_to(user: Any) -> QuerySet[Any]:
    """The users whose existence ``user`` may know: the members of the projects ``user`` belongs
    to, or everyone for whoever may list users in the admin (``auth.view_user``)."""
    users = get_user_model().objects.all()
    if user.has_perm("auth.view_user"):
        return users
    shared = Project.objects.filter(memberships__user=user)
    return users.filter(memberships__project__in=shared).distinct()


def _lock_owners(project_id: int, *, by: Any) -> set[int]:
    """The pks of the project's owner memberships, locked until the transaction ends. ``by`` must
    still be one of the owners (they may have been demoted since their request began)."""
    rows = (
        Membership.objects.select_for_update()
        .filter(project_id=project_id, role=Membership.Role.OWNER)
        .order_by("pk")
        .values_list("pk", "user_id")
    )
    owners = dict(rows)
    if by.pk not in owners.values():
        raise PermissionDenied("You are no longer an owner of this project.")
    return set(owners)


def _check_not_last_owner(owners: set[int], membership: Membership) -> None:
    if membership.pk in owners and len(owners) < 2:
        raise LastOwnerError


def change_role(*, membership: Membership, role: str, by: Any) -> None:
    """Give ``membership`` ``role``; LastOwnerError when that would leave the project ownerless."""
    with transaction.atomic():
        owners = _lock_owners(membership.project_id, by=by)
        if role != Membership.Role.OWNER:
            _check_not_last_owner(owners, membership)
        Membership.objects.filter(pk=membership.pk).update(role=role)
    membership.role = role


def remove_member(*, membership: Membership, by: Any) -> None:
    """Remove ``membership``; LastOwnerError when it is the project's last owner."""
    with transaction.atomic():
        _check_not_last_owner(_lock_owners(membership.project_id, by=by), membership)
        membership.delete()


def create_project(*, name: str, slug: str, owner: Any) -> Project:
    """A new project owned by ``owner``, with the bundled SmolLM2 as teacher and fine-tunable
    student from the start."""
    with transaction.atomic():
        project = Project.objects.create(name=name, slug=slug)
        Membership.objects.create(project=project, user=owner, role=Membership.Role.OWNER)
        LanguageModel.objects.create(
            project=project,
            kind=LanguageModel.Kind.LOCAL,
            fine_tunable=True,
            created_by=owner,
            **BUNDLED_MODEL,
        )
    return project


def add_member(*, project: Project, user: Any, role: str) -> Membership:
    return Membership.objects.create(project=project, user=user, role=role)
