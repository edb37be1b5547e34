"""A run's traces and trace sets, under /api/v1/projects/<slug>/runs/<run_pk>/:

- traces/: the review queue's filters (outcome, state, min, max, q, mine), detail with the exact
  training messages and the history, decide (approve, reject, edit, comment), bulk-decide by filter;
- trace-sets/: freeze (a selection, optionally narrowed by the same filters), list, detail, export.

Rules: jobs/services/review.py, jobs/services/trace_sets.py and the edit form (jobs/forms/review.py).
Reading needs "view"; decisions and freezing need "review".
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from jobs import downloads
from jobs.api.base import AnyAccept, ProjectViewSet
from jobs.api.errors import ErrorSerializer, invalid
from jobs.forms.review import edits_from_post, format_field_value
from jobs.models import BootstrapRun, FinetuneJob, Project, Trace, TraceDecision, TraceSet
from jobs.permissions import Need
from jobs.services import review, trace_sets
from jobs.values import parse_flag

Verdict = TraceDecision.Verdict


class TraceFilterSerializer(serializers.Serializer):
    """The review queue's filters; a value that is not one of these is a 400, never ignored."""

    outcome = serializers.ChoiceField(choices=review.OUTCOMES, required=False)
    state = serializers.ChoiceField(choices=review.STATES, required=False)
    min = serializers.FloatField(required=False, help_text="Score at least this.")
    max = serializers.FloatField(required=False, help_text="Score at most this.")
    q = serializers.CharField(required=False, max_length=200, help_text="Text in any field.")
    mine = serializers.BooleanField(required=False, help_text="Assigned to the caller.")


def trace_filter(data: Any, prefix: str = "") -> review.TraceFilter:
    """A strictly checked TraceFilter (errors name the parameter, under ``prefix``)."""
    typed = TraceFilterSerializer(data=data)
    if not typed.is_valid():
        field, messages = next(iter(typed.errors.items()))
        raise invalid(f"{prefix}{field}", str(messages[0]))
    values = typed.validated_data
    return review.TraceFilter(
        outcome=values.get("outcome", ""),
        state=values.get("state", ""),
        score_min=values.get("min"),
        score_max=values.get("max"),
        q=values.get("q", "").strip(),
        mine=values.get("mine", False),
    )


FILTER_PARAMETERS = [
    OpenApiParameter(name, type_, description=description, enum=enum)
    for name, type_, description, enum in (
        ("outcome", str, "passed, failed or errored.", review.OUTCOMES),
        ("state", str, "unreviewed, approved, rejected or edited.", review.STATES),
        ("min", float, "Score at least this.", None),
        ("max", float, "Score at most this.", None),
        ("q", str, "Text in an input, label or output.", None),
        ("mine", bool, "Only traces assigned to the caller.", None),
    )
]


def _username(user: Any) -> str | None:
    return user.get_username() if user is not None else None


class TraceSerializer(serializers.ModelSerializer):
    assigned_to = serializers.SerializerMethodField()
    reviewed_by = serializers.SerializerMethodField()

    class Meta:
        model = Trace
        fields = [
            "id",
            "example_index",
            "split",
            "inputs",
            "labels",
            "outputs",
            "edited_outputs",
            "score",
            "passed",
            "parsed",
            "error",
            "review_state",
            "approvals",
            "edited",
            "assigned_to",
            "reviewed_by",
            "reviewed_at",
            "lm_calls",
            "tokens",
            "elapsed_s",
            "created",
        ]
        read_only_fields = fields

    def get_assigned_to(self, trace: Trace) -> str | None:
        return _username(trace.assigned_to)

    def get_reviewed_by(self, trace: Trace) -> str | None:
        return _username(trace.reviewed_by)


class DecisionSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.get_username", read_only=True)

    class Meta:
        model = TraceDecision
        fields = ["id", "user", "verdict", "comment", "edited_outputs", "created"]
        read_only_fields = fields


class TraceDetailSerializer(TraceSerializer):
    """A trace with its calls, what the student trains on (per call, the exact chat messages,
    re-rendered after an edit) and its review history, newest first."""

    training = serializers.SerializerMethodField()
    history = serializers.SerializerMethodField()

    class Meta(TraceSerializer.Meta):
        fields = [*TraceSerializer.Meta.fields, "calls", "training", "history"]
        read_only_fields = fields

    def get_training(self, trace: Trace) -> dict[str, Any]:
        view = review.training_view(trace)
        return {"calls": view["calls"], "outputs": view["outputs"], "error": view["error"]}

    @extend_schema_field(DecisionSerializer(many=True))
    def get_history(self, trace: Trace) -> list[dict[str, Any]]:
        return list(DecisionSerializer(review.history(trace), many=True).data)


class DecideSerializer(serializers.Serializer):
    verdict = serializers.ChoiceField(choices=Verdict.values)
    comment = serializers.CharField(required=False, allow_blank=True, default="")
    edited_outputs = serializers.DictField(
        required=False,
        help_text='verdict "edit": output field -> its new value ({} clears an earlier edit).',
    )
    approve = serializers.BooleanField(
        required=False, default=False, help_text='verdict "edit": approve the edited trace too.'
    )


class BulkDecideSerializer(serializers.Serializer):
    verdict = serializers.ChoiceField(choices=[Verdict.APPROVE, Verdict.REJECT])
    filter = TraceFilterSerializer(
        required=False, help_text="Which of the run's traces (default: all of them)."
    )
    comment = serializers.CharField(required=False, allow_blank=True, default="")


class BulkDecidedSerializer(serializers.Serializer):
    decided = serializers.IntegerField(
        help_text="Traces that got a decision (those already carrying the caller's same vote are skipped)."
    )


class RunScoped(ProjectViewSet):
    """A resource of one run of the project (``run_pk`` in the URL): another project's run is 404."""

    _run: BootstrapRun | None = None

    @property
    def run(self) -> BootstrapRun:
        if self._run is None:
            self._run = get_object_or_404(
                BootstrapRun.objects.select_related("project"),
                pk=self.kwargs["run_pk"],
                project=self.project,
            )
        return self._run


class TraceViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, RunScoped):
    queryset = Trace.objects.all()
    serializer_class = TraceSerializer
    ordering = "example_index"
    needs: ClassVar[dict[str, Need]] = {"decide": "review", "bulk_decide": "review"}

    def project_queryset(self, project: Project) -> QuerySet[Trace]:
        traces: QuerySet[Trace] = self.run.traces.select_related("assigned_to", "reviewed_by")
        if self.action == "list":
            traces = trace_filter(self.request.query_params).apply(traces, self.request.user)
            return traces.defer("calls")
        return traces

    def get_serializer_class(self) -> type[serializers.Serializer]:
        return TraceSerializer if self.action == "list" else TraceDetailSerializer

    @extend_schema(
        summary="The run's traces, filtered as on the review page", parameters=FILTER_PARAMETERS
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(
        summary="Approve, reject, edit or comment on a trace",
        request=DecideSerializer,
        responses={200: TraceDetailSerializer, 400: ErrorSerializer},
    )
    @action(detail=True, methods=["post"])
    def decide(self, request: Request, slug: str, run_pk: int, pk: int) -> Response:
        trace = self.get_object()
        typed = DecideSerializer(data=request.data)
        typed.is_valid(raise_exception=True)
        data = typed.validated_data
        try:
            if data["verdict"] == Verdict.EDIT:
                if "edited_outputs" not in data:
                    raise invalid("edited_outputs", "An edit needs the edited output fields.")
                review.save_edit(
                    trace=trace,
                    user=request.user,
                    edits=typed_edits(trace, data["edited_outputs"]),
                    comment=data["comment"],
                    approve=data["approve"],
                )
            else:
                review.decide(
                    trace=trace, user=request.user, verdict=data["verdict"], comment=data["comment"]
                )
        except ValueError as e:
            raise invalid(None, str(e)) from e
        return Response(TraceDetailSerializer(self.get_object()).data)

    @extend_schema(
        summary="Approve or reject every trace a filter selects",
        request=BulkDecideSerializer,
        responses={200: BulkDecidedSerializer, 400: ErrorSerializer},
    )
    @action(detail=False, methods=["post"], url_path="bulk-decide")
    def bulk_decide(self, request: Request, slug: str, run_pk: int) -> Response:
        typed = BulkDecideSerializer(data=request.data)
        typed.is_valid(raise_exception=True)
        chosen = trace_filter(request.data.get("filter") or {}, prefix="filter.")
        n = review.bulk_decide(
            run=self.run,
            user=request.user,
            traces=chosen.apply(self.run.traces.all(), request.user),
            verdict=typed.validated_data["verdict"],
            comment=typed.validated_data["comment"]
            or f"bulk (API): filter {chosen.querystring() or 'all'}",
        )
        return Response({"decided": n})


def typed_edits(trace: Trace, edited: dict[str, Any]) -> dict[str, Any]:
    """The edited outputs through the page's rule (jobs/forms/review.py): each value typed as its
    signature field, kept only where it differs from the teacher's. Unknown fields are a 400."""
    from jobs.forms.review import editable_fields

    known = {f.name for f in editable_fields(trace)}
    for name in edited:
        if name not in known:
            raise invalid(
                f"edited_outputs.{name}",
                f"not an output field of this trace ({', '.join(sorted(known)) or 'none'})",
            )
    return edits_from_post(
        trace, {f"field:{name}": format_field_value(value) for name, value in edited.items()}
    )


# --- trace sets ---------------------------------------------------------------------------------


class TraceSetSerializer(serializers.ModelSerializer):
    run = serializers.IntegerField(source="run_id", read_only=True)
    created_by = serializers.CharField(source="created_by.get_username", read_only=True)

    class Meta:
        model = TraceSet
        fields = ["id", "run", "version", "name", "rule", "trace_count", "created_by", "created"]
        read_only_fields = fields


class FreezeSerializer(serializers.Serializer):
    selection = serializers.ChoiceField(
        choices=FinetuneJob.Selection.choices,
        default=FinetuneJob.Selection.APPROVED,
        help_text="approved, passing (passed and parsed) or all (parsed); rejected never.",
    )
    name = serializers.CharField(required=False, allow_blank=True, default="", max_length=200)
    filter = TraceFilterSerializer(
        required=False, help_text="Narrow the selection with the review queue's filters."
    )


class TraceSetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, RunScoped):
    queryset = TraceSet.objects.all()
    serializer_class = TraceSetSerializer
    write_need: ClassVar[Need] = "review"

    def project_queryset(self, project: Project) -> QuerySet[TraceSet]:
        return self.run.trace_sets.select_related("created_by")

    @extend_schema(
        summary="Freeze the run's selection as a new trace set version",
        request=FreezeSerializer,
        responses={201: TraceSetSerializer, 400: ErrorSerializer},
    )
    def create(self, request: Request, slug: str, run_pk: int) -> Response:
        typed = FreezeSerializer(data=request.data)
        typed.is_valid(raise_exception=True)
        raw_filter = request.data.get("filter")
        try:
            trace_set = trace_sets.freeze_trace_set(
                run=self.run,
                user=request.user,
                selection=typed.validated_data["selection"],
                name=typed.validated_data["name"],
                trace_filter=trace_filter(raw_filter, prefix="filter.") if raw_filter else None,
            )
        except ValueError as e:
            raise invalid("selection", str(e)) from e
        return Response(TraceSetSerializer(trace_set).data, status=201)

    @extend_schema(
        summary="Export a trace set: jsonl (the training rows) or csv (fields, score, decision)",
        parameters=[
            OpenApiParameter(
                "fmt", str, OpenApiParameter.PATH, enum=list(trace_sets.EXPORT_FORMATS)
            ),
            OpenApiParameter("multitask", bool, description="jsonl: one set for all predictors."),
            OpenApiParameter("exclude_demos", bool, description="jsonl: without the demos."),
        ],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
    )
    @action(
        detail=True,
        methods=["get"],
        url_path="export/<str:fmt>",
        content_negotiation_class=AnyAccept,
    )
    def export(
        self, request: Request, slug: str, run_pk: int, pk: int, fmt: str
    ) -> StreamingHttpResponse:
        trace_set = self.get_object()
        if fmt not in trace_sets.EXPORT_FORMATS:
            raise invalid("fmt", f"Export as {' or '.join(trace_sets.EXPORT_FORMATS)}.")
        return downloads.trace_set_export(
            trace_set,
            fmt,
            multitask=parse_flag(request.query_params.get("multitask"), default=True),
            exclude_demos=parse_flag(request.query_params.get("exclude_demos"), default=True),
        )
