"""What every project resource shares: the project from the URL, its rows only, and the roles."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db.models import QuerySet
from rest_framework import viewsets
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.request import Request

from jobs.api.permissions import ProjectPermission
from jobs.models import Project
from jobs.permissions import Need, ProjectAccess


class ProjectViewSet(viewsets.GenericViewSet):
    """A resource under ``/api/v1/projects/<slug>/``: lists and objects are the project's only,
    so an id of another project answers 404. Reading needs "view"; writes need ``write_need``
    unless ``needs`` names the action."""

    permission_classes = [ProjectPermission]
    lookup_value_converter = "int"
    write_need: ClassVar[Need] = "operate"
    needs: ClassVar[dict[str, Need]] = {}
    ordering: ClassVar[str | tuple[str, ...]] = "-pk"  # the list's cursor order (unique)
    access: ProjectAccess

    @property
    def project(self) -> Project:
        return self.access.project

    def project_queryset(self, project: Project) -> QuerySet[Any]:
        """The resource's rows in ``project``."""
        raise NotImplementedError

    def get_queryset(self) -> QuerySet[Any]:
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular reading the types
            return self.queryset.none()
        return self.project_queryset(self.project)


class AnyAccept(BaseContentNegotiation):
    """For downloads: whatever the client accepts, the view answers with its file."""

    def select_parser(self, request: Request, parsers: list[Any]) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(
        self, request: Request, renderers: list[Any], format_suffix: str | None = None
    ) -> tuple[Any, str]:
        return renderers[0], renderers[0].media_type
