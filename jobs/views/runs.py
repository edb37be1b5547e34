"""Bootstrap runs: the list, the run form (with its LM-call estimate), and the live run page:
counters, rate, ETA and the newest traces, polled while active; cancel and retry."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from jobs.forms.runs import BootstrapRunForm, RescoreForm
from jobs.http import BftRequest
from jobs.models import BootstrapRun, ProgramVersion, Project, Trainset
from jobs.permissions import get_project_for
from jobs.services import queue, rescoring, runs, trace_sets
from jobs.values import parse_int
from jobs.views import live


@login_required
@require_GET
def run_list(request: BftRequest, slug: str) -> HttpResponse:
    project = get_project_for(request, slug).project
    rows = project.runs.select_related("trainset", "program_version__program", "teacher")
    return render(request, "jobs/run_list.html", {"project": project, "nav": "runs", "runs": rows})


def _initial_run(project: Project, request: BftRequest) -> dict[str, Any]:
    """Sensible first choices: the newest trainset, the newest program's latest version, its first
    output; or, with ?from=<run>, that run's settings ("Change settings" after a smoke test)."""
    earlier = project.runs.filter(pk=parse_int(request.GET.get("from")) or 0).first()
    if earlier is not None:
        return runs.form_values(earlier)
    initial: dict[str, Any] = {"metric": "normalized_match"}
    trainset_pk = parse_int(request.GET.get("trainset"))
    ready = project.trainsets.filter(status=Trainset.Status.READY)
    trainset = (ready.filter(pk=trainset_pk) if trainset_pk else ready).first()
    if trainset:
        initial["trainset"] = trainset.pk
    version = ProgramVersion.objects.filter(program__project=project).order_by("-created").first()
    if version:
        initial["program_version"] = version.pk
        try:
            outputs = version.to_spec().output_fields
        except ValueError:
            outputs = ()
        initial["metric_field"] = outputs[-1] if outputs else ""
    return initial


@login_required
@require_http_methods(["GET", "POST"])
def run_create(request: BftRequest, slug: str) -> HttpResponse:
    project = get_project_for(request, slug, need="operate").project
    if request.method == "POST":
        form = BootstrapRunForm(request.POST, project=project)
        if form.is_valid():
            try:
                run = runs.create_bootstrap_run(
                    project=project, user=request.user, **form.run_options()
                )
            except ValueError as e:
                form.add_error(None, str(e))
            else:
                messages.success(
                    request, f"Run #{run.pk} queued: {run.total} examples for the teacher."
                )
                return redirect("jobs:run-detail", project.slug, run.pk)
    else:
        form = BootstrapRunForm(initial=_initial_run(project, request), project=project)
    context = {
        "project": project,
        "nav": "runs",
        "form": form,
        "estimate": runs.estimate(**form.estimate_options()),
        "missing": _missing_parts(project),
    }
    return render(request, "jobs/run_form.html", context, status=400 if form.is_bound else 200)


def _missing_parts(project: Project) -> list[str]:
    missing = []
    if not project.trainsets.filter(status=Trainset.Status.READY).exists():
        missing.append("trainset")
    if not project.programs.exists():
        missing.append("program")
    if not project.models.exists():
        missing.append("model")
    return missing


@login_required
@require_GET
def run_estimate(request: BftRequest, slug: str) -> HttpResponse:
    """The estimate fragment, refreshed (htmx) as the bootstrap form changes."""
    project = get_project_for(request, slug).project
    form = BootstrapRunForm(request.GET, project=project)
    return render(
        request,
        "jobs/run_form.html#run-estimate",
        {"project": project, "estimate": runs.estimate(**form.estimate_options())},
    )


# --- the live run page ---------------------------------------------------------------------

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
    queue_state = queue.queue_info(run)
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
        "retried_passes": run.traces.filter(passed=True, attempt__gt=1).count()
        if run.bootstrap_config().retries
        else None,
        "queue": queue_state,
        "newest": newest,
        "elapsed": elapsed,
        "rate": rate,
        "eta": eta,
        "pass_rate": run.passed / run.done if run.done else None,
        "remaining": max(0, run.total - run.done),
        "action_error": error,
        # Three counts, only once the run is over (or on the full page): not on every poll.
        "selection_counts": trace_sets.selection_counts(run) if full or run.is_terminal else None,
    }


@login_required
@require_GET
def run_detail(request: BftRequest, slug: str, pk: int) -> HttpResponse:
    project = get_project_for(request, slug).project
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


RUN_PAGE = live.LivePage(
    model=BootstrapRun,
    template="jobs/run_detail.html",
    fragment="run-status",
    detail_url="jobs:run-detail",
    status_context=_status_context,
)
run_status = live.status_view(RUN_PAGE)
run_cancel = live.action_view(RUN_PAGE, queue.cancel)
run_retry = live.action_view(RUN_PAGE, queue.retry)
run_continue = live.action_view(RUN_PAGE, runs.continue_run)


# --- re-scoring offline --------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def run_rescore(request: BftRequest, slug: str, pk: int) -> HttpResponse:
    """Score the stored answers with another metric or threshold: a preview on GET (htmx refreshes
    it as the form changes), applied as the run's next metric version on POST (operators)."""
    access = get_project_for(request, slug, need="operate" if request.method == "POST" else "view")
    project = access.project
    run = get_object_or_404(
        BootstrapRun.objects.select_related("program_version__program"), pk=pk, project=project
    )
    outputs = run.program_version.to_spec().output_fields
    metric = run.metric_spec()
    current = {
        "metric": metric.name,
        "metric_field": metric.field,
        "threshold": metric.threshold,
        **metric.options,
    }
    bound = request.method == "POST" or "metric" in request.GET
    form = RescoreForm(
        (request.POST if request.method == "POST" else request.GET) if bound else None,
        initial=current,
    )
    preview = None
    if bound and form.is_valid():
        new_metric = form.build_metric(form.cleaned_data, outputs)
        if new_metric is not None:
            if request.method == "POST":
                try:
                    rescoring.apply(run, new_metric, request.user)
                except ValueError as e:
                    form.add_error(None, str(e))
                else:
                    messages.success(
                        request,
                        f"Run #{run.pk} re-scored (metric v{run.metric_version}): "
                        f"{run.passed} of {run.done} pass.",
                    )
                    return redirect("jobs:run-detail", project.slug, run.pk)
            else:
                preview = rescoring.preview(run, new_metric)
    context = {
        "project": project,
        "nav": "runs",
        "run": run,
        "form": form,
        "preview": preview,
        "outputs": outputs,
    }
    template = "jobs/run_rescore.html#rescore-preview" if request.htmx else "jobs/run_rescore.html"
    status = 400 if request.method == "POST" else 200
    return render(request, template, context, status=status)
