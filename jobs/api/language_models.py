"""/api/v1/projects/<slug>/models/: register (the Models page's form and the installation's
allow-lists, jobs/services/model_policy.py), list, detail, and test on a worker."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response

from jobs.api.base import ProjectViewSet
from jobs.api.errors import ErrorSerializer, invalid
from jobs.api.forms import serializer_for_form, validate_form
from jobs.forms.language_models import MODEL_FIELDS, LanguageModelForm
from jobs.models import LanguageModel, Project
from jobs.services import language_models, queue
from jobs.services.model_policy import ModelPolicyError

OPERATOR_ONLY = ("last_test_output", "last_test_error")


class QueueUnavailable(APIException):
    status_code = 503
    default_code = "queue_unavailable"
    default_detail = "The queue is unavailable (Redis does not answer); try again once it is back."


class LanguageModelSerializer(serializers.ModelSerializer):
    source_job = serializers.IntegerField(source="source_job_id", read_only=True, allow_null=True)

    class Meta:
        model = LanguageModel
        fields = [
            "id",
            *MODEL_FIELDS,
            "source_job",
            "last_test_at",
            "last_test_output",
            "last_test_error",
            "created",
        ]
        read_only_fields = fields
        extra_kwargs = {
            name: {"allow_null": True, "help_text": "Shown to operators and owners only."}
            for name in OPERATOR_ONLY
        }

    def to_representation(self, instance: LanguageModel) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(instance)
        if not self.context.get("can_operate"):  # test answers and provider errors
            data.update(dict.fromkeys(OPERATOR_ONLY))
        return data


ModelCreateSerializer = serializer_for_form(
    "LanguageModelCreateSerializer",
    LanguageModelForm(project=Project(pk=0)),
    doc="A teacher or student LM, checked against the installation's allow-lists.",
)


class ModelTestSerializer(serializers.Serializer):
    rq_job_id = serializers.CharField()
    since = serializers.DateTimeField(
        help_text="The test's answer is in once the model's last_test_at is after this."
    )


class LanguageModelViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectViewSet):
    queryset = LanguageModel.objects.all()
    serializer_class = LanguageModelSerializer
    ordering = "name"

    def project_queryset(self, project: Project) -> QuerySet[LanguageModel]:
        return LanguageModel.objects.filter(project=project)

    def get_serializer_context(self) -> dict[str, Any]:
        access = getattr(self, "access", None)
        return {
            **super().get_serializer_context(),
            "can_operate": bool(access and access.can_operate),
        }

    @extend_schema(
        summary="Register a model",
        request=ModelCreateSerializer,
        responses={
            201: LanguageModelSerializer,
            400: OpenApiResponse(
                ErrorSerializer, "Each refused field, with the setting to change."
            ),
        },
    )
    def create(self, request: Request, slug: str) -> Response:
        typed = ModelCreateSerializer(data=request.data)
        typed.is_valid(raise_exception=True)
        form = validate_form(LanguageModelForm, typed.validated_data, project=self.project)
        model = form.register(request.user)
        return Response(self.get_serializer(model).data, status=201)

    @extend_schema(
        summary="Try the model on a worker (one short prompt)",
        request=None,
        responses={
            202: ModelTestSerializer,
            400: OpenApiResponse(ErrorSerializer, "The installation does not allow the model."),
            503: OpenApiResponse(ErrorSerializer, "The queue is unavailable."),
        },
    )
    @action(detail=True, methods=["post"])
    def test(self, request: Request, slug: str, pk: int) -> Response:
        model = self.get_object()
        since = timezone.now()
        try:
            rq_job_id = language_models.enqueue_model_test(model=model, user=request.user)
        except ModelPolicyError as e:
            raise invalid(None, str(e), code="model_refused") from e
        except queue.QueueUnavailable as e:
            raise QueueUnavailable() from e
        return Response(ModelTestSerializer({"rq_job_id": rq_job_id, "since": since}).data, 202)
