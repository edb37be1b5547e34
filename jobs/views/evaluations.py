"""Evaluations: the list, the form, and the comparison page (the product's verdict).

While an evaluation runs, its page shows live progress (the generic live views of views/live.py:
status, cancel, retry). Then, per candidate, score and pass rate with their intervals, parse
failures, latency, tokens and cost; each candidate against the teacher in words; collapse
warnings; confusion matrices; and the rows, those the candidates disagree on first, filterable,
each opening every candidate's full answer side by side. CSV / JSONL exports of every result.
The fine-tune page loads its verdict box from here (``evaluation_job_verdict``).
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Prefetch
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from jobs import downloads
from jobs.forms.evaluations import EvaluationForm
from jobs.http import BftRequest
from jobs.models import (
    BootstrapRun,
    Evaluation,
    EvaluationCandidate,
    FinetuneJob,
    ProgramVersion,
    Project,
    Trainset,
)
from jobs.permissions import get_project_for
from jobs.services import artifacts, comparisons, evaluations, queue
from jobs.services.evaluations import CandidateChoice
from jobs.values import parse_int
from jobs.views import live

PAGE_SIZE = 50
Role = EvaluationCandidate.Role
Prompting = EvaluationCandidate.Prompting


@login_required
@require_GET
def evaluation_list(request: BftRequest, slug: str) -> HttpResponse:
    project = get_project_for(request, slug).project
    candidates = EvaluationCandidate.objects.select_related("language_model").order_by("position")
    rows = project.evaluations.select_related(
        "program_version__program", "trainset", "finetune_job"
    ).prefetch_related(Prefetch("candidates", queryset=candidates))
    context = {"project": project, "nav": "evaluations", "evaluations": rows}
    return render(request, "jobs/evaluation_list.html", context)


# --- the form -------------------------------------------------------------------------------


def _initial(project: Project, request: BftRequest) -> dict[str, Any]:
    """First choices: from ?job=<pk> (its run's teacher, the base and the fine-tuned student),
    from ?run=<pk> (its program, rows, metric and teacher), else the newest program and trainset."""
    initial: dict[str, Any] = {"metric": "normalized_match"}
    job_pk, run_pk = parse_int(request.GET.get("job")), parse_int(request.GET.get("run"))
    job = run = None
    if job_pk is not None:
        jobs = FinetuneJob.objects.filter(project=project, pk=job_pk)
        job = jobs.select_related("run__teacher", "student").first()
        run = job.run if job else None
    elif run_pk is not None:
        runs = BootstrapRun.objects.filter(project=project, pk=run_pk)
        run = runs.select_related("teacher").first()
    version = ProgramVersion.objects.filter(program__project=project).order_by("-created").first()
    trainset = project.trainsets.filter(status=Trainset.Status.READY).first()
    if version:
        initial["program_version"] = version.pk
        try:
            outputs = version.to_spec().output_fields
        except ValueError:
            outputs = ()
        initial["metric_field"] = outputs[-1] if outputs else ""
    if trainset:
        initial["trainset"] = trainset.pk
    choices: list[CandidateChoice] = []
    if run is not None:
        metric = run.metric or {}
        options = metric.get("options") or {}
        initial.update(
            run=run.pk,
            program_version=run.program_version_id,
            trainset=run.trainset_id,
            metric=metric.get("name", "normalized_match"),
            metric_field=metric.get("field", ""),
            threshold=metric.get("threshold", 1.0),
            tolerance=options.get("tolerance"),
            relative=bool(options.get("relative")),
            pattern=options.get("pattern", ""),
        )
        choices = [CandidateChoice(run.teacher, Role.TEACHER, Prompting.RUN_DEMOS)]
    if job is not None:
        output = artifacts.output_model(job)
        choices = (
            evaluations.default_candidates(job, output)
            if output is not None
            else [*choices, CandidateChoice(job.student, Role.BASE, Prompting.ZERO_SHOT)]
        )
    for i, choice in enumerate(choices, start=1):
        initial.update(
            {
                f"model_{i}": choice.model.pk,
                f"role_{i}": choice.role,
                f"prompting_{i}": choice.prompting,
            }
        )
    return initial


@login_required
@require_http_methods(["GET", "POST"])
def evaluation_create(request: BftRequest, slug: str) -> HttpResponse:
    project = get_project_for(request, slug, need="operate").project
    if request.method == "POST":
        form = EvaluationForm(request.POST, project=project)
        if form.is_valid():
            try:
                evaluation = evaluations.create_evaluation(
                    project=project, user=request.user, **form.evaluation_options()
                )
            except ValueError as e:
                form.add_error(None, str(e))
            else:
                messages.success(
                    request,
                    f"Evaluation #{evaluation.pk} queued: {evaluation.rows} rows × "
                    f"{len(form.cleaned_data['candidates'])} candidates.",
                )
                return redirect("jobs:evaluation-detail", project.slug, evaluation.pk)
    else:
        form = EvaluationForm(initial=_initial(project, request), project=project)
    context = {"project": project, "nav": "evaluations", "form": form}
    return render(
        request, "jobs/evaluation_form.html", context, status=400 if form.is_bound else 200
    )


# --- the comparison page --------------------------------------------------------------------


def _get_evaluation(project: Project, pk: int) -> Evaluation:
    return get_object_or_404(
        Evaluation.objects.select_related(
            "program_version__program", "trainset", "run", "finetune_job", "created_by"
        ),
        pk=pk,
        project=project,
    )


def _status_context(
    evaluation: Evaluation,
    *,
    error: str = "",
    full: bool = False,
    candidates: list[EvaluationCandidate] | None = None,
) -> dict[str, Any]:
    """The live fragment's data: the row (already loaded), its candidates and their counts."""
    if candidates is None:
        candidates = comparisons.candidates_of(evaluation)
    progress = evaluations.progress(evaluation)
    return {
        "evaluation": evaluation,
        "queue": queue.queue_info(evaluation),
        "elapsed": live.elapsed_s(evaluation),
        "progress": progress,
        "candidate_progress": [(c, progress.counts.get(c.pk, 0)) for c in candidates],
        "answered": sum(progress.counts.values()),
        "remaining": max(0, evaluation.total - sum(progress.counts.values())),
        "action_error": error,
        "full": full,
    }


def _candidate_rows(
    comparison: Any, candidates: list[EvaluationCandidate], names: dict[int, str]
) -> list[dict[str, Any]]:
    """Each candidate with its summary, its test against the teacher and its confusion matrix."""
    rows = []
    for candidate, summary in zip(candidates, comparison.summaries, strict=True):
        key = str(candidate.pk)
        matrix = comparison.confusion.get(key)
        rows.append(
            {
                "candidate": candidate,
                "name": names[candidate.pk],
                "summary": summary,
                "paired": comparison.paired.get(key),
                "ratios": comparison.ratios.get(key, []),
                "is_reference": key == comparison.reference,
                "matrix": matrix,
                "matrix_rows": list(zip(matrix.labels, matrix.rows, strict=True)) if matrix else [],
            }
        )
    return rows


@login_required
@require_GET
def evaluation_detail(request: BftRequest, slug: str, pk: int) -> HttpResponse:
    project = get_project_for(request, slug).project
    evaluation = _get_evaluation(project, pk)
    candidates = comparisons.candidates_of(evaluation)
    names = comparisons.candidate_names(candidates)
    row_filter = comparisons.RowFilter.from_query(request.GET, candidates)
    comparison, results = comparisons.comparison_of(evaluation, candidates)
    page = Paginator(row_filter.rows(results), PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "project": project,
        "nav": "evaluations",
        "evaluation": evaluation,
        "field": evaluation.metric_spec().field,
        "candidates": candidates,
        "names": [names[c.pk] for c in candidates],
        "filter": row_filter,
        "qs": row_filter.querystring(),
        "pairs": comparisons.pair_choices(candidates, names),
        "kinds": row_filter.kind_choices(names),
        "page": page,
        "rows": comparisons.compared_rows(evaluation, candidates, list(page.object_list)),
    }
    if request.htmx and request.htmx.target == "evaluation-rows":
        return render(request, "jobs/evaluation_detail.html#evaluation-rows", context)
    rows = _candidate_rows(comparison, candidates, names)
    student = next((r for r in rows if r["candidate"].role == Role.STUDENT and r["paired"]), None)
    context |= {
        **_status_context(evaluation, full=True, candidates=candidates),
        "has_results": any(s.n for s in comparison.summaries),
        "candidate_rows": rows,
        "headline": student,
        "matrices": [r for r in rows if r["matrix"]],
    }
    return render(request, "jobs/evaluation_detail.html", context)


EVALUATION_PAGE = live.LivePage(
    model=Evaluation,
    template="jobs/evaluation_detail.html",
    fragment="evaluation-status",
    detail_url="jobs:evaluation-detail",
    status_context=_status_context,
)
# Cancel stops after the rows in flight; retry skips the rows already answered.
evaluation_status = live.status_view(EVALUATION_PAGE)
evaluation_cancel = live.action_view(EVALUATION_PAGE, queue.cancel)
evaluation_retry = live.action_view(EVALUATION_PAGE, queue.retry)


@login_required
@require_GET
def evaluation_row(request: BftRequest, slug: str, pk: int, row_index: int) -> HttpResponse:
    """One row: its inputs and gold labels, and each candidate's full answer side by side;
    previous / next follow the comparison's filter."""
    project = get_project_for(request, slug).project
    evaluation = _get_evaluation(project, pk)
    candidates = comparisons.candidates_of(evaluation)
    row = comparisons.row_results(evaluation, candidates, row_index)
    if row is None:
        raise Http404("No candidate has answered this row.")
    names = comparisons.candidate_names(candidates)
    row_filter = comparisons.RowFilter.from_query(request.GET, candidates)
    order = row_filter.rows(comparisons.result_rows(evaluation))
    position = order.index(row_index) if row_index in order else None
    context = {
        "project": project,
        "nav": "evaluations",
        "evaluation": evaluation,
        "field": evaluation.metric_spec().field,
        "row": row,
        "answers": [
            (c, names[c.pk], result) for c, result in zip(candidates, row.results, strict=True)
        ],
        "qs": row_filter.querystring(),
        "position": position,
        "count": len(order),
        "previous": order[position - 1] if position else None,
        "next": order[position + 1] if position is not None and position + 1 < len(order) else None,
    }
    return render(request, "jobs/evaluation_row.html", context)


@login_required
@require_GET
def evaluation_export(request: BftRequest, slug: str, pk: int, fmt: str) -> StreamingHttpResponse:
    """Every stored result, streamed: CSV (formula-safe) or JSON Lines."""
    project = get_project_for(request, slug).project
    if fmt not in downloads.EVALUATION_EXPORTS:
        raise Http404("No such export.")
    evaluation = get_object_or_404(Evaluation, pk=pk, project=project)
    return downloads.evaluation_export(evaluation, fmt)


# --- the fine-tune page's verdict box -------------------------------------------------------


@login_required
@require_GET
def evaluation_job_verdict(request: BftRequest, slug: str, job_pk: int) -> HttpResponse:
    """The latest verdict on a fine-tune's output model, and a newer evaluation still going
    (polled while it is); loaded by the job page."""
    project = get_project_for(request, slug).project
    job = get_object_or_404(FinetuneJob, pk=job_pk, project=project)
    context = {"project": project, "job": job, "found": comparisons.job_evaluations(job)}
    return render(request, "jobs/_evaluation_verdict.html#job-verdict", context)
