"""/api/v1/projects/<slug>/finetunes/: create a fine-tune (every hyperparameter of the fine-tune
form), list, detail with progress and the output model id, metric points, cancel, retry, and
the artifact downloads. Rules: jobs/forms/finetunes.py, jobs/services/finetunes.py."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponseBase
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from jobs import downloads
from jobs.api.base import AnyAccept, ProjectViewSet
from jobs.api.errors import ErrorSerializer, invalid
from jobs.api.forms import serializer_for_form, validate_form
from jobs.api.live import QueueSerializer, queue_state, queued_actions
from jobs.forms.finetunes import FinetuneForm
from jobs.models import BootstrapRun, FinetuneJob, FinetuneMetric, Project
from jobs.services import artifacts, finetunes

JOB_FIELDS = [
    "id",
    "status",
    "run",
    "student",
    "trace_set",
    "selection",
    "multitask",
    "exclude_demos",
    "config",
    "step",
    "total_steps",
    "percent",
    "checkpoint_step",
    "epoch",
    "last_loss",
    "learning_rate",
    "tokens_per_s",
    "eta_s",
    "train_rows",
    "device",
    "output_model_id",
    "error",
    "cancel_requested",
    "created_by",
    "created",
    "started",
    "finished",
    "updated",
]


class FinetuneSerializer(serializers.ModelSerializer):
    run = serializers.IntegerField(source="run_id", read_only=True)
    student = serializers.IntegerField(source="student_id", read_only=True)
    trace_set = serializers.IntegerField(source="trace_set_id", read_only=True, allow_null=True)
    percent = serializers.IntegerField(read_only=True, allow_null=True)
    created_by = serializers.CharField(source="created_by.get_username", read_only=True)

    class Meta:
        model = FinetuneJob
        fields = JOB_FIELDS
        read_only_fields = fields


class DownloadSerializer(serializers.Serializer):
    kind = serializers.CharField()
    label = serializers.CharField()
    filename = serializers.CharField()
    url = serializers.CharField()


class FinetuneDetailSerializer(FinetuneSerializer):
    """A fine-tune and its progress; once it succeeded, its output model (``output_model_id``, and
    the ``output_model`` registered in the project) and its downloads."""

    output_model = serializers.SerializerMethodField(
        help_text="The id of the model registered for the output (usable as a teacher or student)."
    )
    log_tail = serializers.CharField(read_only=True)
    queue = serializers.SerializerMethodField()
    downloads = serializers.SerializerMethodField()

    class Meta(FinetuneSerializer.Meta):
        fields = [*JOB_FIELDS, "output_model", "log_tail", "queue", "downloads"]
        read_only_fields = fields

    def get_output_model(self, job: FinetuneJob) -> int | None:
        if job.status != FinetuneJob.Status.SUCCEEDED:
            return None
        model = artifacts.output_model(job)
        return model.pk if model else None

    @extend_schema_field(QueueSerializer(allow_null=True))
    def get_queue(self, job: FinetuneJob) -> dict[str, Any] | None:
        return queue_state(job) if job.is_active else None

    @extend_schema_field(DownloadSerializer(many=True))
    def get_downloads(self, job: FinetuneJob) -> list[dict[str, Any]]:
        if job.status != FinetuneJob.Status.SUCCEEDED:
            return []
        slug = job.project.slug
        return [
            {
                "kind": d.kind,
                "label": d.label,
                "filename": d.filename,
                "url": reverse("api:finetune-artifact", args=[slug, job.pk, d.kind]),
            }
            for d in artifacts.downloads(job)
        ]


class MetricSerializer(serializers.ModelSerializer):
    class Meta:
        model = FinetuneMetric
        fields = ["step", "loss", "learning_rate", "tokens_per_s", "created"]
        read_only_fields = fields


FinetuneCreateSerializer = serializer_for_form(
    "FinetuneCreateSerializer",
    FinetuneForm(run=BootstrapRun(pk=0, project=Project(pk=0))),
    extra={"run": serializers.IntegerField(min_value=1, help_text="The bootstrap run's id.")},
    doc="A LoRA fine-tune of a student on a run's traces: a frozen trace set (trace_set), or "
    "the selection frozen now. Every hyperparameter of the fine-tune form, with its defaults.",
)


class FinetuneViewSet(
    queued_actions(FinetuneDetailSerializer, "fine-tune"),  # type: ignore[misc]
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    ProjectViewSet,
):
    queryset = FinetuneJob.objects.all()
    serializer_class = FinetuneSerializer

    def project_queryset(self, project: Project) -> QuerySet[FinetuneJob]:
        return FinetuneJob.objects.filter(project=project).select_related(
            "created_by", "project", "run__program_version"
        )

    def get_serializer_class(self) -> type[serializers.Serializer]:
        return FinetuneSerializer if self.action == "list" else FinetuneDetailSerializer

    @extend_schema(
        summary="Queue a fine-tune",
        request=FinetuneCreateSerializer,
        responses={
            201: FinetuneDetailSerializer,
            400: OpenApiResponse(ErrorSerializer, "What is refused, naming the field."),
        },
    )
    def create(self, request: Request, slug: str) -> Response:
        typed = FinetuneCreateSerializer(data=request.data)
        typed.is_valid(raise_exception=True)
        values = dict(typed.validated_data)
        run = BootstrapRun.objects.filter(project=self.project, pk=values.pop("run")).first()
        if run is None:
            raise invalid("run", "No such run in this project.")
        form = validate_form(FinetuneForm, values, run=run)
        try:
            job = finetunes.create_finetune_job(run=run, user=request.user, **form.job_options())
        except ValueError as e:
            raise invalid(None, str(e)) from e
        return Response(FinetuneDetailSerializer(job).data, status=201)

    @extend_schema(
        summary="The loss curve's points: one per optimizer step",
        responses={200: MetricSerializer(many=True)},
    )
    @action(detail=True, methods=["get"], serializer_class=MetricSerializer, ordering="step")
    def metrics(self, request: Request, slug: str, pk: int) -> Response:
        job = self.get_object()
        page = self.paginate_queryset(job.metrics.all())
        return self.get_paginated_response(MetricSerializer(page, many=True).data)

    @extend_schema(
        summary=(
            "Download an output: adapter (zip), program and served-program (DSPy JSON), "
            "train (JSONL), manifest"
        ),
        parameters=[
            OpenApiParameter(
                "kind",
                str,
                OpenApiParameter.PATH,
                enum=list(artifacts.DOWNLOAD_KINDS),
            )
        ],
        responses={
            (200, "application/octet-stream"): OpenApiTypes.BINARY,
            404: OpenApiResponse(description="Not succeeded, or no such file."),
        },
    )
    @action(
        detail=True,
        methods=["get"],
        url_path="artifacts/<str:kind>",
        url_name="artifact",
        content_negotiation_class=AnyAccept,
    )
    def artifact(self, request: Request, slug: str, pk: int, kind: str) -> HttpResponseBase:
        return downloads.job_artifact(self.get_object(), kind)
