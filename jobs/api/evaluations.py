"""/api/v1/projects/<slug>/evaluations/: create (the evaluation form's fields, its candidate slots
as a ``candidates`` list), list, detail with progress, candidates and verdict, results (every
candidate's answer to every row), cancel, retry. Rules: jobs/forms/evaluations.py,
jobs/services/evaluations.py."""

from __future__ import annotations

import re
from typing import Any

from django.db.models import QuerySet
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

from jobs.api.base import ProjectViewSet
from jobs.api.errors import ApiError, ErrorSerializer, invalid, validation_body
from jobs.api.forms import serializer_for_form, validate_form
from jobs.api.live import QueueSerializer, queue_state, queued_actions
from jobs.forms.evaluations import SLOTS, EvaluationForm
from jobs.models import Evaluation, EvaluationCandidate, EvaluationResult, Project
from jobs.services import comparisons, evaluations

_SLOT = re.compile(r"(model|role|prompting)_(\d+)")

EVALUATION_FIELDS = [
    "id",
    "status",
    "program_version",
    "trainset",
    "split",
    "metric",
    "run",
    "finetune_job",
    "limit",
    "rows",
    "total",
    "done",
    "percent",
    "verdict",
    "error",
    "cancel_requested",
    "created_by",
    "created",
    "started",
    "finished",
]


class CandidateSerializer(serializers.ModelSerializer):
    model = serializers.IntegerField(source="language_model_id", read_only=True)
    name = serializers.CharField(source="language_model.name", read_only=True)
    label = serializers.CharField(read_only=True)

    class Meta:
        model = EvaluationCandidate
        fields = ["id", "position", "role", "prompting", "model", "name", "label", "error"]
        read_only_fields = fields


class EvaluationSerializer(serializers.ModelSerializer):
    program_version = serializers.IntegerField(source="program_version_id", read_only=True)
    trainset = serializers.IntegerField(source="trainset_id", read_only=True)
    run = serializers.IntegerField(source="run_id", read_only=True, allow_null=True)
    finetune_job = serializers.IntegerField(
        source="finetune_job_id", read_only=True, allow_null=True
    )
    percent = serializers.IntegerField(read_only=True, allow_null=True)
    created_by = serializers.CharField(source="created_by.get_username", read_only=True)

    class Meta:
        model = Evaluation
        fields = EVALUATION_FIELDS
        read_only_fields = fields


class EvaluationDetailSerializer(EvaluationSerializer):
    """An evaluation, its progress and candidates; ``verdict`` (the comparison's headline) once
    it has ended. Each answer: ``results/``."""

    candidates = serializers.SerializerMethodField()
    queue = serializers.SerializerMethodField()

    class Meta(EvaluationSerializer.Meta):
        fields = [*EVALUATION_FIELDS, "candidates", "queue"]
        read_only_fields = fields

    @extend_schema_field(CandidateSerializer(many=True))
    def get_candidates(self, evaluation: Evaluation) -> list[dict[str, Any]]:
        return list(CandidateSerializer(comparisons.candidates_of(evaluation), many=True).data)

    @extend_schema_field(QueueSerializer(allow_null=True))
    def get_queue(self, evaluation: Evaluation) -> dict[str, Any] | None:
        return queue_state(evaluation) if evaluation.is_active else None


class ResultSerializer(serializers.ModelSerializer):
    candidate = serializers.IntegerField(source="candidate_id", read_only=True)

    class Meta:
        model = EvaluationResult
        fields = ["id", "candidate", *comparisons.RESULT_FIELDS]
        read_only_fields = fields


class CandidateChoiceSerializer(serializers.Serializer):
    model = serializers.IntegerField(min_value=1, help_text="The id of a model of this project.")
    role = serializers.ChoiceField(
        choices=EvaluationCandidate.Role.choices, default=EvaluationCandidate.Role.MODEL
    )
    prompting = serializers.ChoiceField(
        choices=EvaluationCandidate.Prompting.choices,
        default=EvaluationCandidate.Prompting.ZERO_SHOT,
    )


_FORM = EvaluationForm(project=Project(pk=0))
EvaluationCreateSerializer = serializer_for_form(
    "EvaluationCreateSerializer",
    _FORM,
    exclude=tuple(name for name in _FORM.fields if _SLOT.fullmatch(name)),
    extra={
        "candidates": serializers.ListField(
            child=CandidateChoiceSerializer(),
            min_length=1,
            max_length=SLOTS,
            help_text="The models compared: each with its role and how it is prompted.",
        )
    },
    doc="A program version scored with a metric on a trainset's rows, once per candidate.",
)


def _slot_field(name: str | None) -> str | None:
    """The form's slot field (model_2) as the API names it (candidates[1].model)."""
    match = _SLOT.fullmatch(name or "")
    return f"candidates[{int(match.group(2)) - 1}].{match.group(1)}" if match else name


class EvaluationViewSet(
    queued_actions(EvaluationDetailSerializer, "evaluation"),  # type: ignore[misc]
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    ProjectViewSet,
):
    queryset = Evaluation.objects.all()
    serializer_class = EvaluationSerializer

    def project_queryset(self, project: Project) -> QuerySet[Evaluation]:
        return Evaluation.objects.filter(project=project).select_related("created_by")

    def get_serializer_class(self) -> type[serializers.Serializer]:
        return EvaluationSerializer if self.action == "list" else EvaluationDetailSerializer

    @extend_schema(
        summary="Queue an evaluation",
        request=EvaluationCreateSerializer,
        responses={
            201: EvaluationDetailSerializer,
            400: OpenApiResponse(ErrorSerializer, "What does not fit, naming the field."),
        },
    )
    def create(self, request: Request, slug: str) -> Response:
        typed = EvaluationCreateSerializer(data=request.data)
        typed.is_valid(raise_exception=True)
        values = dict(typed.validated_data)
        # The slots, as the page posts them: the unused ones keep the form's initial role and prompting.
        values |= {name: f.initial for name, f in _FORM.fields.items() if _SLOT.fullmatch(name)}
        for i, candidate in enumerate(values.pop("candidates"), start=1):
            values |= {f"{name}_{i}": value for name, value in candidate.items()}
        try:
            form = validate_form(EvaluationForm, values, project=self.project)
        except ApiError as e:
            errors = [{**item, "field": _slot_field(item["field"])} for item in e.body["errors"]]
            raise ApiError(validation_body(errors)) from e
        try:
            evaluation = evaluations.create_evaluation(
                project=self.project, user=request.user, **form.evaluation_options()
            )
        except ValueError as e:
            raise invalid(None, str(e)) from e
        return Response(EvaluationDetailSerializer(evaluation).data, status=201)

    @extend_schema(
        summary="Every candidate's answer to every row, with its score",
        parameters=[OpenApiParameter("candidate", int, description="Only this candidate's.")],
        responses={200: ResultSerializer(many=True)},
    )
    @action(detail=True, methods=["get"], serializer_class=ResultSerializer, ordering="pk")
    def results(self, request: Request, slug: str, pk: int) -> Response:
        evaluation = self.get_object()
        results = EvaluationResult.objects.filter(candidate__evaluation=evaluation)
        candidate = request.query_params.get("candidate")
        if candidate is not None:
            if not candidate.isdigit():
                raise invalid("candidate", "Give a candidate's id.")
            results = results.filter(candidate_id=int(candidate))
        page = self.paginate_queryset(results)
        return self.get_paginated_response(ResultSerializer(page, many=True).data)
