"""The live bootstrap run page: counters, rate, ETA and the newest traces, polled while active;
cancel and retry (finished examples are kept and skipped)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from jobs.models import BootstrapRun, FinetuneJob, Project
from jobs.permissions import get_project_for
from jobs.services import queue
from jobs.views import live

NEWEST_TRACES = 8
TRACE_FIELDS = (
    "pk",
    "run",
    "example_index",
    "inputs",
    "outputs",
    "score",
    "passed",
    "parsed",
    "error",
    "created",
)


def _status_context(run: BootstrapRun, *, error: str = "", full: bool = False) -> dict[str, Any]:
    """The fragment's data: the run row (already loaded) plus one query for the newest traces."""
    queue = live.queue_info(run)
    newest = list(run.traces.only(*TRACE_FIELDS).order_by("-pk")[:NEWEST_TRACES])
    elapsed = live.elapsed_s(run)
    # Examples per second over the newest traces finished in this attempt (a retry skips the
    # earlier ones, so done / elapsed would overstate it).
    recent = [t.created for t in newest if run.started and t.created >= run.started]
    rate = None
    if len(recent) >= 2 and (span := (recent[0] - recent[-1]).total_seconds()) > 0:
        rate = (len(recent) - 1) / span
    elif recent and elapsed:
        rate = len(recent) / elapsed
    eta = (run.total - run.done) / rate if rate and run.status == "running" else None
    return {
        "run": run,
        "queue": queue,
        "newest": newest,
        "elapsed": elapsed,
        "rate": rate,
        "eta": eta,
        "pass_rate": run.passed / run.done if run.done else None,
        "remaining": max(0, run.total - run.done),
        "action_error": error,
        # Three counts, only once the run is over (or on the full page): not on every poll.
        "selection_counts": _selection_counts(run) if full or run.is_terminal else None,
    }


def _selection_counts(run: BootstrapRun) -> dict[str, int]:
    return {
        value: run.traces.for_selection(value).count() for value in FinetuneJob.Selection.values
    }


def _get_run(project: Project, pk: int) -> BootstrapRun:
    return get_object_or_404(BootstrapRun, pk=pk, project=project)


@login_required
@require_GET
def run_detail(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = get_project_for(request, slug)
    run = get_object_or_404(
        BootstrapRun.objects.select_related(
            "trainset", "program_version__program", "teacher", "created_by"
        ),
        pk=pk,
        project=project,
    )
    context = {
        "project": project,
        "nav": "runs",
        **_status_context(run, full=True),
        "jobs": run.finetune_jobs.select_related("student"),
    }
    return render(request, "jobs/run_detail.html", context)


@login_required
@require_GET
def run_status(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Polled every 2 s while the run is active; rendered without the trigger once it is not."""
    project = get_project_for(request, slug)
    run = _get_run(project, pk)
    return render(
        request, "jobs/run_detail.html#run-status", {"project": project, **_status_context(run)}
    )


def _after_action(
    request: HttpRequest, project: Project, run: BootstrapRun, error: str
) -> HttpResponse:
    if request.htmx:  # type: ignore[attr-defined]
        context = {"project": project, **_status_context(run, error=error)}
        return render(request, "jobs/run_detail.html#run-status", context)
    return redirect("jobs:run-detail", project.slug, run.pk)


@login_required
@require_POST
def run_cancel(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = get_project_for(request, slug, need="operate")
    run = _get_run(project, pk)
    error = live.act(request, queue.cancel, row=run)
    return _after_action(request, project, run, error)


@login_required
@require_POST
def run_retry(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = get_project_for(request, slug, need="operate")
    run = _get_run(project, pk)
    error = live.act(request, queue.retry, row=run)
    return _after_action(request, project, run, error)
