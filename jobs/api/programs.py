"""/api/v1/projects/<slug>/programs/: create a version from a JSON/YAML spec (errors name the key),
list, detail with every version. Rules: jobs/services/programs.py; the spec parser
(jobs/engine/programs.py) is the single judge of a spec."""

from __future__ import annotations

from typing import Any

from django.db.models import Max, QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, serializers
from rest_framework.request import Request
from rest_framework.response import Response

from jobs.api.base import ProjectViewSet
from jobs.api.errors import ErrorSerializer, invalid
from jobs.engine.programs import ProgramSpecError, parse_program_spec
from jobs.models import Program, ProgramVersion, Project
from jobs.services import programs


class ProgramVersionSerializer(serializers.ModelSerializer):
    program = serializers.IntegerField(source="program_id", read_only=True)
    name = serializers.CharField(source="program.name", read_only=True)
    created_by = serializers.CharField(source="created_by.get_username", read_only=True)

    class Meta:
        model = ProgramVersion
        fields = ["id", "program", "name", "version", "spec", "created_by", "created"]
        read_only_fields = fields


class ProgramSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.get_username", read_only=True)
    latest_version = serializers.IntegerField(
        source="latest_number", read_only=True, allow_null=True
    )
    latest_version_id = serializers.SerializerMethodField()

    class Meta:
        model = Program
        fields = ["id", "name", "latest_version", "latest_version_id", "created_by", "created"]
        read_only_fields = fields

    def get_latest_version_id(self, program: Program) -> int | None:
        latest = program.latest_version
        return latest.pk if latest else None


class ProgramDetailSerializer(ProgramSerializer):
    versions = serializers.SerializerMethodField()

    class Meta(ProgramSerializer.Meta):
        fields = [*ProgramSerializer.Meta.fields, "versions"]
        read_only_fields = fields

    @extend_schema_field(ProgramVersionSerializer(many=True))
    def get_versions(self, program: Program) -> list[dict[str, Any]]:
        versions = program.versions.select_related("program", "created_by").order_by("-version")
        return list(ProgramVersionSerializer(versions, many=True).data)


class ProgramCreateSerializer(serializers.Serializer):
    """A declarative spec: {"name", "modules": [{"name", "type", "signature", ...}]}. A program of
    the spec's name gets it as its next version (unless its latest version says the same)."""

    spec = serializers.JSONField(
        help_text="The spec as a JSON object, or as JSON or YAML text (see format)."
    )
    format = serializers.ChoiceField(
        choices=["json", "yaml"],
        required=False,
        allow_null=True,
        help_text="For a spec given as text; default: JSON if it starts with '{', else YAML.",
    )


class ProgramCreatedSerializer(ProgramVersionSerializer):
    created_version = serializers.BooleanField(
        read_only=True, help_text="False when the latest version already had this spec."
    )

    class Meta(ProgramVersionSerializer.Meta):
        fields = [*ProgramVersionSerializer.Meta.fields, "created_version"]
        read_only_fields = fields


def spec_error(error: ProgramSpecError) -> Exception:
    """A spec problem as a 400 naming the key: spec.modules[0].signature, or spec for the document."""
    key = "" if error.key in ("", "(document)") else f".{error.key}"
    return invalid(f"spec{key}", error.message, code="invalid_spec")


class ProgramViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectViewSet):
    queryset = Program.objects.all()
    serializer_class = ProgramSerializer

    def project_queryset(self, project: Project) -> QuerySet[Program]:
        return (
            Program.objects.filter(project=project)
            .annotate(latest_number=Max("versions__version"))
            .select_related("created_by")
        )

    def get_serializer_class(self) -> type[serializers.Serializer]:
        return ProgramDetailSerializer if self.action == "retrieve" else ProgramSerializer

    @extend_schema(
        summary="Save a spec as a program version",
        request=ProgramCreateSerializer,
        responses={
            201: OpenApiResponse(ProgramCreatedSerializer, "A new version (or program)."),
            200: OpenApiResponse(ProgramCreatedSerializer, "The latest version already says this."),
            400: OpenApiResponse(ErrorSerializer, "The spec's problem, naming its key."),
        },
    )
    def create(self, request: Request, slug: str) -> Response:
        typed = ProgramCreateSerializer(data=request.data)
        typed.is_valid(raise_exception=True)
        source = typed.validated_data["spec"]
        if not isinstance(source, (dict, str)):
            raise invalid("spec", "Give the spec as a JSON object or as JSON/YAML text.")
        try:
            spec = parse_program_spec(source, fmt=typed.validated_data.get("format"))
        except ProgramSpecError as e:
            raise spec_error(e) from e
        program = Program.objects.filter(project=self.project, name=spec.name).first()
        latest = program.latest_version if program else None
        version = programs.create_program_version(
            project=self.project, name=spec.name, source=spec.to_dict(), user=request.user
        )
        created = latest is None or version.pk != latest.pk
        body = {**ProgramVersionSerializer(version).data, "created_version": created}
        return Response(body, status=201 if created else 200)
