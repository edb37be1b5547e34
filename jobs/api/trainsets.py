"""/api/v1/projects/<slug>/trainsets/: upload (multipart, streamed validation), list, detail with
split counts and import progress, rows (paginated). Rules: jobs/services/trainsets.py and the
upload form (jobs/forms/trainsets.py)."""

from __future__ import annotations

import re
from typing import Any

from django.db.models import Count, Q, QuerySet
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from jobs.api.base import ProjectViewSet
from jobs.api.errors import ApiError, ErrorSerializer, invalid
from jobs.api.forms import serializer_for_form, validate_form
from jobs.forms.trainsets import TrainsetUploadForm
from jobs.http import checks_body_size
from jobs.models import Project, Trainset, TrainsetRow
from jobs.services import trainsets


class TrainsetSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.get_username", read_only=True)

    class Meta:
        model = Trainset
        fields = [
            "id",
            "name",
            "file_name",
            "fmt",
            "status",
            "row_count",
            "fields",
            "dev_ratio",
            "split_seed",
            "error",
            "created_by",
            "created",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "fields": {"help_text": "Per field: name, type, fill_rate, filled, missing."}
        }


class TrainsetDetailSerializer(TrainsetSerializer):
    train_count = serializers.SerializerMethodField()
    dev_count = serializers.SerializerMethodField()
    import_progress = serializers.SerializerMethodField(
        help_text="A background import's {phase, done, total, percent}, while it runs."
    )

    class Meta(TrainsetSerializer.Meta):
        fields = [*TrainsetSerializer.Meta.fields, "train_count", "dev_count", "import_progress"]
        read_only_fields = fields

    def _counts(self, trainset: Trainset) -> dict[str, int]:
        """Rows per split, one query per trainset."""
        cache: dict[int, dict[str, int]] = self.__dict__.setdefault("_split_counts", {})
        if trainset.pk not in cache:
            cache[trainset.pk] = trainset.rows.aggregate(
                train=Count("pk", filter=Q(split=TrainsetRow.Split.TRAIN)),
                dev=Count("pk", filter=Q(split=TrainsetRow.Split.DEV)),
            )
        return cache[trainset.pk]

    def get_train_count(self, trainset: Trainset) -> int:
        return self._counts(trainset)["train"]

    def get_dev_count(self, trainset: Trainset) -> int:
        return self._counts(trainset)["dev"]

    def get_import_progress(self, trainset: Trainset) -> dict[str, Any] | None:
        if trainset.status != Trainset.Status.IMPORTING:
            return None
        return trainsets.import_progress(trainset)


class TrainsetRowSerializer(serializers.ModelSerializer):
    class Meta:
        model = TrainsetRow
        fields = ["index", "split", "data"]
        read_only_fields = fields


UploadSerializer = serializer_for_form(
    "TrainsetUploadSerializer",
    TrainsetUploadForm(),
    doc="A JSONL or CSV file (UTF-8), validated as it streams; nothing is imported on errors.",
)

_PLACE = re.compile(r"(?:line|row) (\d+)")


def row_errors(outcome: trainsets.ImportOutcome) -> ApiError:
    """A refused upload: every error names its line (JSONL) or row (CSV) and column."""
    errors = []
    for error in outcome.errors:
        match = _PLACE.match(error.location)
        errors.append(
            {
                "field": "file",
                "location": error.location,
                "line": int(match.group(1)) if match else None,
                "column": error.column,
                "message": error.message,
                "code": "invalid_row" if match else "invalid_file",
            }
        )
    more = f" (the first {len(errors)} are listed)" if outcome.more_errors else ""
    return ApiError(
        {
            "detail": f"The file has {outcome.error_count} problem(s){more}; nothing was imported.",
            "code": "invalid_file",
            "errors": errors,
            "error_count": outcome.error_count,
            "row_count": outcome.row_count,
            "valid_count": outcome.valid_count,
        }
    )


@checks_body_size  # in initial(), with the upload's own limit, instead of the middleware
class TrainsetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ProjectViewSet):
    queryset = Trainset.objects.all()
    serializer_class = TrainsetSerializer
    parser_classes = [MultiPartParser, FormParser]

    def project_queryset(self, project: Project) -> QuerySet[Trainset]:
        return Trainset.objects.filter(project=project).select_related("created_by")

    def get_serializer_class(self) -> type[serializers.Serializer]:
        return TrainsetDetailSerializer if self.action == "retrieve" else TrainsetSerializer

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # Before authentication: a session's CSRF check would read the whole body.
        if refusal := trainsets.request_too_large(request.META):
            raise ApiError({"detail": refusal, "code": "too_large"}, status_code=413)
        super().initial(request, *args, **kwargs)

    @extend_schema(
        summary="Upload a trainset",
        request={"multipart/form-data": UploadSerializer},
        responses={
            201: OpenApiResponse(TrainsetDetailSerializer, "Imported."),
            202: OpenApiResponse(
                TrainsetDetailSerializer, "A large file: importing on a worker (poll the detail)."
            ),
            400: OpenApiResponse(ErrorSerializer, "Errors, each naming its line/row and column."),
            413: OpenApiResponse(ErrorSerializer, "Over the upload limit; nothing was read."),
            503: OpenApiResponse(ErrorSerializer, "The queue is down (a large file's import)."),
        },
    )
    def create(self, request: Request, slug: str) -> Response:
        typed = UploadSerializer(data=request.data)
        typed.is_valid(raise_exception=True)
        data = validate_form(TrainsetUploadForm, typed.validated_data).cleaned_data
        upload = data["file"]
        try:
            outcome = trainsets.import_upload(
                project=self.project,
                user=request.user,
                upload=upload,
                name=trainsets.upload_name(data["name"], upload.name),
                fmt=data["fmt"],
                skip_bad_rows=data["skip_bad_rows"],
                dev_ratio=data["dev_ratio"],
                split_seed=data["split_seed"],
            )
        except ValueError as e:  # the split seed does not fit
            raise invalid("split_seed", str(e)) from e
        if outcome.trainset is None:
            raise row_errors(outcome)
        if outcome.queue_error:
            raise ApiError(
                {
                    "detail": outcome.queue_error,
                    "code": "queue_unavailable",
                    "trainset": outcome.trainset.pk,
                },
                status_code=503,
            )
        body = TrainsetDetailSerializer(outcome.trainset).data
        return Response(body, status=202 if outcome.queued else 201)

    @extend_schema(
        summary="A trainset's rows, in order",
        parameters=[
            OpenApiParameter(
                "split", str, enum=TrainsetRow.Split.values, description="Only this split."
            )
        ],
        responses={200: TrainsetRowSerializer(many=True)},
    )
    @action(detail=True, methods=["get"], serializer_class=TrainsetRowSerializer, ordering="index")
    def rows(self, request: Request, slug: str, pk: int) -> Response:
        trainset = self.get_object()
        rows = trainset.rows.only("index", "split", "data")
        split = request.query_params.get("split")
        if split is not None:
            if split not in TrainsetRow.Split.values:
                raise invalid("split", f"Use one of {', '.join(TrainsetRow.Split.values)}.")
            rows = rows.filter(split=split)
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(TrainsetRowSerializer(page, many=True).data)
