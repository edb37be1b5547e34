"""/api/v1/projects/: the projects the key or the signed-in user may see, with the role it acts as."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from jobs.api.permissions import access_for
from jobs.models import ApiKey, Project


class ProjectSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField(help_text="The role this request acts as.")

    class Meta:
        model = Project
        fields = ["slug", "name", "created", "role"]
        read_only_fields = fields

    def get_role(self, project: Project) -> str:
        roles: dict[int, str] = self.context.get("roles", {})
        return roles.get(project.pk, "")


class ProjectsViewSet(viewsets.GenericViewSet):
    """A key sees its own project only; a session, every project its user is a member of."""

    queryset = Project.objects.all()
    serializer_class = ProjectSerializer
    lookup_field = "slug"
    lookup_value_converter = "slug"
    ordering = "name"

    def get_queryset(self) -> QuerySet[Project]:
        if getattr(self, "swagger_fake_view", False):
            return Project.objects.none()
        if isinstance(self.request.auth, ApiKey):
            return Project.objects.filter(pk=self.request.auth.project_id)
        return Project.objects.filter(memberships__user=self.request.user)

    def _roles(self, projects: list[Project]) -> dict[int, str]:
        return {p.pk: access_for(self.request, p.slug).role for p in projects}

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        context = {**self.get_serializer_context(), "roles": self._roles(page)}
        return self.get_paginated_response(ProjectSerializer(page, many=True, context=context).data)

    @extend_schema(responses=ProjectSerializer)
    def retrieve(self, request: Request, slug: str) -> Response:
        access = access_for(request, slug)
        context: dict[str, Any] = {"roles": {access.project.pk: access.role}}
        return Response(ProjectSerializer(access.project, context=context).data)
