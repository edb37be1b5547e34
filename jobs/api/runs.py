"""/api/v1/projects/<slug>/runs/: create a bootstrap run (the run form's fields and rules), list,
detail with progress, cancel, retry. Rules: jobs/forms/runs.py, jobs/services/runs.py."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from jobs.api.base import ProjectViewSet
from jobs.api.errors import ErrorSerializer, invalid
from jobs.api.forms import serializer_for_form, validate_form
from jobs.api.live import QueueSerializer, act, queue_state, queued_actions
from jobs.forms.runs import BootstrapRunForm
from jobs.models import BootstrapRun, Project
from jobs.services import runs, trace_sets

RUN_FIELDS = [
    "id",
    "status",
    "trainset",
    "program_version",
    "teacher",
    "metric",
    "config",
    "total",
    "done",
    "passed",
    "failed",
    "errored",
    "skipped",
    "percent",
    "lm_calls",
    "tokens",
    "required_approvals",
    "error",
    "cancel_requested",
    "created_by",
    "created",
    "started",
    "finished",
    "updated",
]


class RunSerializer(serializers.ModelSerializer):
    trainset = serializers.IntegerField(source="trainset_id", read_only=True)
    program_version = serializers.IntegerField(source="program_version_id", read_only=True)
    teacher = serializers.IntegerField(source="teacher_id", read_only=True)
    percent = serializers.IntegerField(read_only=True, allow_null=True)
    created_by = serializers.CharField(source="created_by.get_username", read_only=True)

    class Meta:
        model = BootstrapRun
        fields = RUN_FIELDS
        read_only_fields = fields


class SelectionCountsSerializer(serializers.Serializer):
    approved = serializers.IntegerField()
    passing = serializers.IntegerField()
    all = serializers.IntegerField()


class RunDetailSerializer(RunSerializer):
    """A run and its progress. ``queue`` for a queued or running run; ``selection_counts`` (how
    many traces each fine-tune selection would train on) once it has ended."""

    queue = serializers.SerializerMethodField()
    selection_counts = serializers.SerializerMethodField()

    class Meta(RunSerializer.Meta):
        fields = [*RUN_FIELDS, "queue", "selection_counts"]
        read_only_fields = fields

    @extend_schema_field(QueueSerializer(allow_null=True))
    def get_queue(self, run: BootstrapRun) -> dict[str, Any] | None:
        return queue_state(run) if run.is_active else None

    @extend_schema_field(SelectionCountsSerializer(allow_null=True))
    def get_selection_counts(self, run: BootstrapRun) -> dict[str, int] | None:
        return trace_sets.selection_counts(run) if run.is_terminal else None


RunCreateSerializer = serializer_for_form(
    "RunCreateSerializer",
    BootstrapRunForm(project=Project(pk=0)),
    doc="A bootstrap run: the teacher runs the program over the trainset's train split.",
)


class RunViewSet(
    queued_actions(RunDetailSerializer, "run"),  # type: ignore[misc]
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    ProjectViewSet,
):
    queryset = BootstrapRun.objects.all()
    serializer_class = RunSerializer

    def project_queryset(self, project: Project) -> QuerySet[BootstrapRun]:
        return BootstrapRun.objects.filter(project=project).select_related("created_by")

    def get_serializer_class(self) -> type[serializers.Serializer]:
        return RunSerializer if self.action == "list" else RunDetailSerializer

    @extend_schema(
        summary="Queue a bootstrap run",
        request=RunCreateSerializer,
        responses={
            201: RunDetailSerializer,
            400: OpenApiResponse(ErrorSerializer, "What does not fit, naming the field."),
        },
    )
    def create(self, request: Request, slug: str) -> Response:
        typed = RunCreateSerializer(data=request.data)
        typed.is_valid(raise_exception=True)
        form = validate_form(BootstrapRunForm, typed.validated_data, project=self.project)
        try:
            run = runs.create_bootstrap_run(
                project=self.project, user=request.user, **form.run_options()
            )
        except ValueError as e:
            raise invalid(None, str(e)) from e
        return Response(RunDetailSerializer(run).data, status=201)

    @extend_schema(
        summary="Go on with a run its smoke test paused (status checked): bootstrap the rest",
        request=None,
        responses={
            200: RunDetailSerializer,
            409: OpenApiResponse(ErrorSerializer, "The run is not paused."),
        },
    )
    @action(detail=True, methods=["post"], url_path="continue", url_name="continue")
    def continue_run(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return act(self, request, runs.continue_run, RunDetailSerializer)
