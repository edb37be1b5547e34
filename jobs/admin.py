from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.urls import reverse
from django.utils.html import format_html

from jobs.forms.language_models import LanguageModelAdminForm
from jobs.http import BftRequest
from jobs.models import (
    BootstrapRun,
    Evaluation,
    EvaluationCandidate,
    FinetuneJob,
    FinetuneMetric,
    LanguageModel,
    Membership,
    Program,
    ProgramVersion,
    Project,
    Trace,
    Trainset,
    TrainsetImport,
    TrainsetRow,
)
from jobs.services import language_models, queue

QUEUED_WORK_READONLY = (
    "status",
    "rq_job_id",
    "cancel_requested",
    "cancel_requested_at",
    "error",
    "created_by",
    "created",
    "started",
    "finished",
    "updated",
)


def _run_each(request: BftRequest, rows: QuerySet[Any], action: Any, verb: str) -> None:
    done = 0
    for row in rows:
        try:
            action(row)
            done += 1
        except (ValueError, queue.QueueUnavailable) as exc:
            messages.warning(request, f"{row}: {exc or 'the queue is unavailable'}")
    if done:
        messages.success(request, f"{verb} {done}.")


def rq_job_link(row: Any) -> str:
    """The row's RQ job on django-rq's pages (/admin/rq/), in the queue its kind is enqueued on."""
    from django_rq.settings import get_queues_map

    index = get_queues_map().get(row.WORK.queue)
    if index is None or row.pk is None:
        return "–"
    url = reverse("django_rq:job_detail", args=[index, str(row.rq_job_id)])
    return format_html('<a href="{}">{}</a>', url, str(row.rq_job_id)[:8])


class QueuedWorkActions:
    """What every queued row's admin offers (jobs/services/queue.py does the work): its RQ job,
    cancel, retry (a run skips finished examples, a job resumes from its checkpoint) and mark
    failed (an import's trainset fails and its file is removed)."""

    @admin.display(description="RQ job")
    def rq_job(self, obj: Any) -> str:
        return rq_job_link(obj)

    @admin.action(description="Cancel the selected")
    def cancel(self, request: BftRequest, queryset: QuerySet[Any]) -> None:
        _run_each(request, queryset, lambda r: queue.cancel(row=r, user=request.user), "Cancelled")

    @admin.action(description="Retry the selected (they resume where they stopped)")
    def retry(self, request: BftRequest, queryset: QuerySet[Any]) -> None:
        _run_each(request, queryset, lambda r: queue.retry(row=r, user=request.user), "Retried")

    @admin.action(description="Mark the selected as failed (stuck rows; their RQ job is stopped)")
    def mark_failed(self, request: BftRequest, queryset: QuerySet[Any]) -> None:
        _run_each(
            request,
            queryset,
            lambda r: queue.mark_failed(row=r, user=request.user),
            "Marked failed",
        )


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "project", "role", "created"]
    list_filter = ["role", "project"]
    search_fields = ["user__username", "project__name"]
    list_select_related = ["user", "project"]
    raw_id_fields = ["user"]


@admin.register(LanguageModel)
class LanguageModelAdmin(admin.ModelAdmin):
    form = LanguageModelAdminForm
    list_display = [
        "name",
        "project",
        "kind",
        "model_name",
        "fine_tunable",
        "source_job",
        "last_test_at",
    ]
    list_filter = ["kind", "fine_tunable", "project"]
    search_fields = ["name", "model_name"]
    list_select_related = ["project", "source_job"]
    raw_id_fields = ["source_job", "created_by"]
    readonly_fields = ["last_test_output", "last_test_error", "last_test_at", "created"]
    actions = ["test_models"]

    @admin.action(description="Test the selected models on a worker")
    def test_models(self, request: BftRequest, queryset: QuerySet[LanguageModel]) -> None:
        _run_each(
            request,
            queryset,
            lambda m: language_models.enqueue_model_test(model=m, user=request.user),
            "Queued tests for",
        )


@admin.register(Trainset)
class TrainsetAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "project",
        "fmt",
        "row_count",
        "status",
        "dev_ratio",
        "split_seed",
        "created",
    ]
    list_filter = ["status", "fmt", "project"]
    search_fields = ["name", "file_name"]
    list_select_related = ["project"]
    raw_id_fields = ["created_by"]
    readonly_fields = ["row_count", "fields", "status", "error", "created"]


@admin.register(TrainsetImport)
class TrainsetImportAdmin(QueuedWorkActions, admin.ModelAdmin):
    list_display = ["id", "trainset", "status", "skip_bad_rows", "rq_job", "created", "finished"]
    list_filter = ["status"]
    search_fields = ["=id", "=rq_job_id", "trainset__name"]
    list_select_related = ["trainset"]
    raw_id_fields = ["trainset", "created_by"]
    readonly_fields = [*QUEUED_WORK_READONLY, "rq_job", "trainset", "path", "skip_bad_rows"]
    actions = ["mark_failed"]


@admin.register(TrainsetRow)
class TrainsetRowAdmin(admin.ModelAdmin):
    list_display = ["trainset", "index", "split"]
    list_filter = ["split"]
    list_select_related = ["trainset"]
    raw_id_fields = ["trainset"]
    show_full_result_count = False
    search_fields = ["=trainset__name"]


class ProgramVersionInline(admin.TabularInline):
    model = ProgramVersion
    extra = 0
    fields = ["version", "created_by", "created"]
    readonly_fields = ["version", "created_by", "created"]
    can_delete = False


@admin.register(Program)
class ProgramAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "created"]
    list_filter = ["project"]
    search_fields = ["name"]
    list_select_related = ["project"]
    raw_id_fields = ["created_by"]
    inlines = [ProgramVersionInline]


@admin.register(ProgramVersion)
class ProgramVersionAdmin(admin.ModelAdmin):
    list_display = ["program", "version", "created_by", "created"]
    list_filter = ["program__project"]
    search_fields = ["program__name"]
    list_select_related = ["program", "created_by"]
    raw_id_fields = ["program", "created_by"]


@admin.register(BootstrapRun)
class BootstrapRunAdmin(QueuedWorkActions, admin.ModelAdmin):
    list_display = [
        "id",
        "project",
        "trainset",
        "teacher",
        "status",
        "done",
        "total",
        "passed",
        "failed",
        "errored",
        "rq_job",
        "created",
    ]
    list_filter = ["status", "project"]
    search_fields = ["=id", "=rq_job_id", "trainset__name"]
    list_select_related = ["project", "trainset", "teacher"]
    raw_id_fields = ["trainset", "program_version", "teacher", "created_by"]
    readonly_fields = [
        *QUEUED_WORK_READONLY,
        "rq_job",
        "total",
        "done",
        "passed",
        "failed",
        "errored",
        "lm_calls",
        "tokens",
    ]
    actions = ["cancel", "retry", "mark_failed"]


@admin.register(Trace)
class TraceAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "run",
        "example_index",
        "score",
        "passed",
        "parsed",
        "review_state",
        "reviewed_by",
    ]
    list_filter = ["review_state", "passed", "parsed"]
    search_fields = ["=run__id"]
    list_select_related = ["run", "reviewed_by"]
    raw_id_fields = ["run", "reviewed_by"]
    show_full_result_count = False
    readonly_fields = [
        "inputs",
        "labels",
        "outputs",
        "calls",
        "score",
        "passed",
        "parsed",
        "error",
        "lm_calls",
        "tokens",
        "elapsed_s",
        "created",
    ]


class FinetuneMetricInline(admin.TabularInline):
    model = FinetuneMetric
    extra = 0
    fields = readonly_fields = ("step", "loss", "learning_rate", "tokens_per_s")
    can_delete = False
    max_num = 0


@admin.register(FinetuneJob)
class FinetuneJobAdmin(QueuedWorkActions, admin.ModelAdmin):
    list_display = [
        "id",
        "project",
        "run",
        "student",
        "status",
        "step",
        "total_steps",
        "last_loss",
        "output_model_id",
        "rq_job",
        "created",
    ]
    list_filter = ["status", "selection", "project"]
    search_fields = ["=id", "=rq_job_id", "output_model_id"]
    list_select_related = ["project", "run", "student"]
    raw_id_fields = ["run", "student", "created_by"]
    readonly_fields = [
        *QUEUED_WORK_READONLY,
        "rq_job",
        "step",
        "total_steps",
        "checkpoint_step",
        "epoch",
        "last_loss",
        "learning_rate",
        "tokens_per_s",
        "eta_s",
        "train_rows",
        "log_tail",
        "output_model_id",
        "output_dir",
        "worker_name",
        "device",
    ]
    inlines = [FinetuneMetricInline]
    actions = ["cancel", "retry", "mark_failed"]


@admin.register(FinetuneMetric)
class FinetuneMetricAdmin(admin.ModelAdmin):
    list_display = ["job", "step", "loss", "learning_rate", "tokens_per_s"]
    list_select_related = ["job"]
    raw_id_fields = ["job"]
    search_fields = ["=job__id"]
    show_full_result_count = False


class EvaluationCandidateInline(admin.TabularInline):
    model = EvaluationCandidate
    extra = 0
    fields = readonly_fields = ("position", "role", "language_model", "prompting", "error")
    can_delete = False
    max_num = 0


@admin.register(Evaluation)
class EvaluationAdmin(QueuedWorkActions, admin.ModelAdmin):
    list_display = [
        "id",
        "project",
        "program_version",
        "split",
        "status",
        "done",
        "total",
        "rq_job",
        "created",
    ]
    list_filter = ["status", "split", "project"]
    search_fields = ["=id", "=rq_job_id"]
    list_select_related = ["project", "program_version__program"]
    raw_id_fields = ["program_version", "trainset", "run", "finetune_job", "created_by"]
    readonly_fields = [*QUEUED_WORK_READONLY, "rq_job", "rows", "total", "done", "verdict"]
    inlines = [EvaluationCandidateInline]
    actions = ["cancel", "retry", "mark_failed"]
