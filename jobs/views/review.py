"""Team review of a run's traces: the queue, one trace, bulk actions, thresholds, team, trace sets.

Business rules live in jobs/services/review.py; these views decide access (jobs/permissions.py), parse the
request and choose the template. Reading needs "view"; every decision needs "review" (reviewer,
operator, owner); the run's approval rule needs "operate".
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect, trigger_client_event

from jobs import downloads
from jobs.forms.review import editable_fields, edits_from_post
from jobs.http import BftRequest
from jobs.models import BootstrapRun, FinetuneJob, Project, Trace, TraceDecision, TraceSet
from jobs.permissions import get_project_for
from jobs.services import review, review_stats, trace_sets
from jobs.values import parse_flag, parse_float, parse_int

PAGE_SIZE = 50


def _get_run(project: Project, pk: int) -> BootstrapRun:
    return get_object_or_404(
        BootstrapRun.objects.select_related("program_version__program", "trainset", "teacher"),
        pk=pk,
        project=project,
    )


def _get_trace(run: BootstrapRun, trace_pk: int) -> Trace:
    return get_object_or_404(
        Trace.objects.select_related("assigned_to", "reviewed_by"), pk=trace_pk, run=run
    )


def _queue_url(
    project: Project, run: BootstrapRun, trace_filter: review.TraceFilter | None = None
) -> str:
    url = reverse("jobs:review-queue", args=[project.slug, run.pk])
    qs = trace_filter.querystring() if trace_filter else ""
    return f"{url}?{qs}" if qs else url


def _trace_url(
    project: Project, run: BootstrapRun, trace_pk: int, trace_filter: review.TraceFilter
) -> str:
    url = reverse("jobs:review-trace", args=[project.slug, run.pk, trace_pk])
    qs = trace_filter.querystring()
    return f"{url}?{qs}" if qs else url


def _float(value: Any, default: float) -> float:
    number = parse_float(value)
    return default if number is None else number


def _back(request: BftRequest, project: Project, run: BootstrapRun) -> HttpResponse:
    """After a POST from the queue: back to it with the same filters (htmx: a client redirect)."""
    return _go(request, _queue_url(project, run, review.TraceFilter.from_query(request.POST)))


def _go(request: BftRequest, url: str) -> HttpResponse:
    """Redirect; for htmx, a client redirect (the whole page goes there)."""
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


# --- the queue --------------------------------------------------------------------------------


@login_required
@require_GET
def review_queue(request: BftRequest, slug: str, pk: int) -> HttpResponse:
    project = get_project_for(request, slug).project
    run = _get_run(project, pk)
    trace_filter = review.TraceFilter.from_query(request.GET)
    traces = trace_filter.apply(run.traces.all(), request.user)
    page = review.queue_page(traces, request.GET.get("page"), PAGE_SIZE)
    context = {
        "project": project,
        "nav": "runs",
        "run": run,
        "filter": trace_filter,
        "qs": trace_filter.querystring(),
        "page": page,
        "counts": review.queue_counts(run, request.user),
        "metric_field": (run.metric or {}).get("field", ""),
        "threshold": review_stats.default_threshold(run),
        "team": review.reviewer_stats(run),
        "trace_sets": run.trace_sets.select_related("created_by").order_by("-version"),
        "selections": FinetuneJob.Selection.choices,
        "outcomes": review.OUTCOMES,
        "states": review.STATES,
    }
    return render(request, "jobs/review_queue.html", context)


@login_required
@require_GET
def review_counts(request: BftRequest, slug: str, pk: int) -> HttpResponse:
    """The count chips, refreshed (htmx) when a row's decision changes them."""
    project = get_project_for(request, slug).project
    run = _get_run(project, pk)
    trace_filter = review.TraceFilter.from_query(request.GET)
    context = {
        "project": project,
        "run": run,
        "filter": trace_filter,
        "counts": review.queue_counts(run, request.user),
    }
    return render(request, "jobs/review_queue.html#review-counts", context)


@login_required
@require_GET
def review_threshold(request: BftRequest, slug: str, pk: int) -> HttpResponse:
    """The histogram, what threshold T keeps and the kept traces' balance (htmx fragment)."""
    project = get_project_for(request, slug).project
    run = _get_run(project, pk)
    threshold = _float(request.GET.get("t"), review_stats.default_threshold(run))
    summary = review_stats.threshold_summary(run, threshold)
    template = (
        "jobs/_review_threshold.html"
        if request.GET.get("full")
        else "jobs/_review_threshold.html#threshold-result"
    )
    context = {"project": project, "run": run, "summary": summary, "hist": summary["histogram"]}
    return render(request, template, context)


# --- one trace --------------------------------------------------------------------------------


def _detail_context(
    request: BftRequest, project: Project, run: BootstrapRun, trace: Trace
) -> dict[str, Any]:
    trace_filter = review.TraceFilter.from_query(request.GET)
    prev_pk, next_pk = review.neighbours(trace_filter.apply(run.traces.all(), request.user), trace)
    return {
        "project": project,
        "nav": "runs",
        "run": run,
        "trace": trace,
        "filter": trace_filter,
        "qs": trace_filter.querystring(),
        "prev_url": _trace_url(project, run, prev_pk, trace_filter) if prev_pk else "",
        "next_url": _trace_url(project, run, next_pk, trace_filter) if next_pk else "",
        "view": review.training_view(trace),
        "fields": editable_fields(trace),
        "history": review.history(trace),
    }


@login_required
@require_GET
def review_trace(request: BftRequest, slug: str, pk: int, trace_pk: int) -> HttpResponse:
    project = get_project_for(request, slug).project
    run = _get_run(project, pk)
    trace = _get_trace(run, trace_pk)
    return render(request, "jobs/review_trace.html", _detail_context(request, project, run, trace))


@login_required
@require_POST
def review_decide(request: BftRequest, slug: str, pk: int, trace_pk: int) -> HttpResponse:
    """Approve, reject or comment. htmx: the decision panel (or the queue row) comes back, and a
    ``traceDecided`` event carries the next trace's URL for auto-advance."""
    project = get_project_for(request, slug, need="review").project
    run = _get_run(project, pk)
    trace = _get_trace(run, trace_pk)
    verdict = request.POST.get("verdict", "")
    if verdict not in (
        TraceDecision.Verdict.APPROVE,
        TraceDecision.Verdict.REJECT,
        TraceDecision.Verdict.COMMENT,
    ):
        return HttpResponse("Unknown verdict.", status=400)
    try:
        review.decide(
            trace=trace, user=request.user, verdict=verdict, comment=request.POST.get("comment", "")
        )
    except ValueError as e:
        if request.htmx:
            return HttpResponse(str(e), status=400)
        messages.error(request, str(e))
        return redirect(
            _trace_url(project, run, trace.pk, review.TraceFilter.from_query(request.GET))
        )
    trace = _get_trace(run, trace.pk)
    if request.POST.get("view") == "row":
        context: dict[str, Any] = {
            "project": project,
            "run": run,
            "t": _row_trace(run, trace.pk),
            "qs": request.GET.urlencode(),
        }
        response = render(request, "jobs/review_queue.html#trace-row", context)
        return trigger_client_event(response, "tracesChanged")
    context = _detail_context(request, project, run, trace)
    if request.htmx:
        response = render(request, "jobs/review_trace.html#decision-panel", context)
        if verdict != TraceDecision.Verdict.COMMENT:
            trigger_client_event(
                response, "traceDecided", {"next": context["next_url"], "verdict": verdict}
            )
        return response
    if (
        verdict != TraceDecision.Verdict.COMMENT
        and context["next_url"]
        and request.POST.get("advance")
    ):
        return redirect(context["next_url"])
    return redirect(_trace_url(project, run, trace.pk, context["filter"]))


def _row_trace(run: BootstrapRun, trace_pk: int) -> Trace:
    return review.queue_page_traces(run.traces.filter(pk=trace_pk)).get()


@login_required
@require_POST
def review_edit(request: BftRequest, slug: str, pk: int, trace_pk: int) -> HttpResponse:
    """Save edited output fields; the page then shows the re-rendered training messages."""
    project = get_project_for(request, slug, need="review").project
    run = _get_run(project, pk)
    trace = _get_trace(run, trace_pk)
    trace_filter = review.TraceFilter.from_query(request.GET)
    try:
        edits = edits_from_post(trace, request.POST)
        review.save_edit(
            trace=trace,
            user=request.user,
            edits=edits,
            comment=request.POST.get("comment", ""),
            approve=bool(request.POST.get("approve")),
        )
    except ValueError as e:
        context = _detail_context(request, project, run, trace)
        context["edit_error"] = str(e)
        context["posted"] = {
            k[len("field:") :]: v for k, v in request.POST.items() if k.startswith("field:")
        }
        return render(request, "jobs/review_trace.html", context, status=400)
    if edits:
        messages.success(
            request,
            f"Edit saved ({', '.join(sorted(edits))}); the training messages below are re-rendered.",
        )
    else:
        messages.success(request, "The outputs match the teacher's again: the edit is cleared.")
    return redirect(_trace_url(project, run, trace.pk, trace_filter) + "#training")


# --- bulk, thresholds, team -------------------------------------------------------------------


@login_required
@require_POST
def review_bulk(request: BftRequest, slug: str, pk: int) -> HttpResponse:
    project = get_project_for(request, slug, need="review").project
    run = _get_run(project, pk)
    action = request.POST.get("action", "")
    user = request.user
    trace_filter = review.TraceFilter.from_query(request.POST)
    if action == "approve_above":
        threshold = _float(request.POST.get("t"), review_stats.default_threshold(run))
        n = review.approve_passing_above(run=run, user=user, threshold=threshold)
        messages.success(
            request,
            f"Approved {n} passing trace{'s' if n != 1 else ''} with score ≥ {threshold:g}.",
        )
    elif action == "reject_errored":
        n = review.reject_errored(run=run, user=user)
        messages.success(request, f"Rejected {n} errored trace{'s' if n != 1 else ''}.")
    elif action in ("approve_filtered", "reject_filtered"):
        verdict = (
            TraceDecision.Verdict.APPROVE
            if action == "approve_filtered"
            else TraceDecision.Verdict.REJECT
        )
        traces = trace_filter.apply(run.traces.all(), user)
        n = review.bulk_decide(
            run=run,
            user=user,
            traces=traces,
            verdict=verdict,
            comment=f"bulk: filter {trace_filter.querystring() or 'all'}",
        )
        messages.success(
            request, f"{verdict.label}d {n} trace{'s' if n != 1 else ''} of the filtered selection."
        )
    else:
        return HttpResponse("Unknown bulk action.", status=400)
    if run.required_approvals > 1 and action in ("approve_above", "approve_filtered"):
        messages.info(
            request,
            f"Each of these counts as your approval; a trace is approved after {run.required_approvals}.",
        )
    return _back(request, project, run)


@login_required
@require_POST
def review_assign(request: BftRequest, slug: str, pk: int) -> HttpResponse:
    project = get_project_for(request, slug, need="review").project
    run = _get_run(project, pk)
    try:
        result = review.assign_evenly(run=run, user=request.user)
    except ValueError as e:
        messages.error(request, str(e))
    else:
        n = sum(result.values())
        split = ", ".join(f"{u.get_username()} {c}" for u, c in result.items())
        messages.success(
            request, f"Assigned {n} unassigned unreviewed trace{'s' if n != 1 else ''}: {split}."
        )
    return _back(request, project, run)


@login_required
@require_POST
def review_claim(request: BftRequest, slug: str, pk: int) -> HttpResponse:
    project = get_project_for(request, slug, need="review").project
    run = _get_run(project, pk)
    trace = review.claim_next(run=run, user=request.user)
    if trace is None:
        messages.info(request, "Nothing left to claim: every trace is reviewed or assigned.")
        return _back(request, project, run)
    return _go(
        request,
        _trace_url(project, run, trace.pk, review.TraceFilter(state="unreviewed", mine=True)),
    )


@login_required
@require_POST
def review_settings(request: BftRequest, slug: str, pk: int) -> HttpResponse:
    project = get_project_for(request, slug, need="operate").project
    run = _get_run(project, pk)
    try:
        required = parse_int(request.POST.get("required_approvals"))
        if required is None:
            raise ValueError("must be a whole number")
        review.set_required_approvals(run=run, user=request.user, required=required)
    except ValueError as e:
        messages.error(
            request,
            f"Required approvals: {e}"
            if str(e)[:1].isupper()
            else "Required approvals must be a whole number.",
        )
    else:
        messages.success(
            request,
            f"A trace now counts as approved after {required} approval{'s' if required != 1 else ''}.",
        )
    return _back(request, project, run)


# --- trace sets -------------------------------------------------------------------------------


@login_required
@require_POST
def review_freeze(request: BftRequest, slug: str, pk: int) -> HttpResponse:
    project = get_project_for(request, slug, need="review").project
    run = _get_run(project, pk)
    trace_filter = (
        review.TraceFilter.from_query(request.POST) if request.POST.get("narrow") else None
    )
    try:
        trace_set = trace_sets.freeze_trace_set(
            run=run,
            user=request.user,
            selection=request.POST.get("selection", FinetuneJob.Selection.APPROVED),
            name=request.POST.get("name", ""),
            trace_filter=trace_filter,
        )
    except ValueError as e:
        messages.error(request, str(e))
    else:
        messages.success(
            request,
            f"Froze “{trace_set.name}” as version {trace_set.version}: {trace_set.trace_count} traces.",
        )
    return _back(request, project, run)


def _get_trace_set(run: BootstrapRun, set_pk: int) -> TraceSet:
    return get_object_or_404(TraceSet.objects.select_related("run"), pk=set_pk, run=run)


def _flag(request: BftRequest, name: str) -> bool:
    return parse_flag(request.GET.get(name), default=True)


@login_required
@require_GET
def trace_set_export(
    request: BftRequest, slug: str, pk: int, set_pk: int, fmt: str
) -> StreamingHttpResponse:
    """JSONL: the training rows exactly as build_training_rows makes them; CSV: fields, score, decision."""
    project = get_project_for(request, slug).project
    run = _get_run(project, pk)
    trace_set = _get_trace_set(run, set_pk)
    if fmt not in trace_sets.EXPORT_FORMATS:
        raise Http404("Trace sets export as .csv or .jsonl.")
    return downloads.trace_set_export(
        trace_set,
        fmt,
        multitask=_flag(request, "multitask"),
        exclude_demos=_flag(request, "exclude_demos"),
    )
