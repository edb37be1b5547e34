"""Fine-tunes: the fine-tune form of a run (with a preview of the training data), and the live
job page: state, step, loss curve, log tail, polled while active; cancel, retry (resume); and on
success the model id, the downloads and how to load the program."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import F, Q
from django.db.models.functions import Mod
from django.http import HttpResponse, HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_http_methods

from jobs import charts, downloads
from jobs.forms.finetunes import FinetuneForm
from jobs.http import BftRequest
from jobs.models import BootstrapRun, FinetuneJob, Project
from jobs.permissions import get_project_for
from jobs.services import artifacts, finetunes, queue, trace_sets
from jobs.views import live


def _get_run(project: Project, pk: int) -> BootstrapRun:
    return get_object_or_404(
        BootstrapRun.objects.select_related("program_version__program", "trainset"),
        pk=pk,
        project=project,
    )


@login_required
@require_http_methods(["GET", "POST"])
def run_finetune(request: BftRequest, slug: str, pk: int) -> HttpResponse:
    project = get_project_for(request, slug, need="operate").project
    run = _get_run(project, pk)
    counts = trace_sets.selection_counts(run)
    if request.method == "POST":
        form = FinetuneForm(request.POST, run=run)
        if form.is_valid():
            try:
                job = finetunes.create_finetune_job(
                    run=run, user=request.user, **form.job_options()
                )
            except ValueError as e:
                form.add_error(None, str(e))
            else:
                messages.success(request, f"Fine-tune job #{job.pk} queued on the GPU queue.")
                return redirect("jobs:job-detail", project.slug, job.pk)
    else:
        selection = next(
            (s for s in FinetuneJob.Selection.values if counts[s]), FinetuneJob.Selection.APPROVED
        )
        student = form_student_initial(run)
        form = FinetuneForm(initial={"selection": selection, "student": student}, run=run)
    context = {
        "project": project,
        "nav": "runs",
        "run": run,
        "form": form,
        "counts": counts,
        "preview": trace_sets.preview(run, **form.preview_options()),
    }
    return render(request, "jobs/run_finetune.html", context, status=400 if form.is_bound else 200)


def form_student_initial(run: BootstrapRun) -> int | None:
    student = run.project.models.filter(kind="local", fine_tunable=True).order_by("pk").first()
    return student.pk if student else None


@login_required
@require_GET
def run_finetune_preview(request: BftRequest, slug: str, pk: int) -> HttpResponse:
    """The training-data preview fragment, refreshed (htmx) when selection or formatting changes."""
    project = get_project_for(request, slug).project
    run = _get_run(project, pk)
    form = FinetuneForm(request.GET, run=run)
    context = {
        "project": project,
        "run": run,
        "preview": trace_sets.preview(run, **form.preview_options()),
    }
    return render(request, "jobs/run_finetune.html#finetune-preview", context)


# --- the live job page ---------------------------------------------------------------------

MAX_CURVE_POINTS = 400
LOG_LINES = 20


def loss_points(job: FinetuneJob) -> list[tuple[int, float | None]]:
    """The stored (step, loss) points, thinned in SQL to at most ~MAX_CURVE_POINTS (every k-th step
    and the latest): one query on the (job, step) index however long the training."""
    span = max(job.total_steps or 0, job.step or 0)
    every = -(-span // MAX_CURVE_POINTS) if span > MAX_CURVE_POINTS else 1
    metrics = job.metrics.all()
    if every > 1:
        metrics = metrics.annotate(r=Mod(F("step"), every)).filter(Q(r=0) | Q(step__gte=job.step))
    return list(metrics.order_by("step").values_list("step", "loss"))


def _status_context(job: FinetuneJob, *, error: str = "") -> dict[str, Any]:
    queue_state = queue.queue_info(job)
    points = loss_points(job)
    log_lines = job.log_tail.splitlines()[-LOG_LINES:]
    return {
        "job": job,
        "queue": queue_state,
        "elapsed": live.elapsed_s(job),
        "eta": job.eta_s if job.status == "running" else None,
        # Every label inside is escaped by charts.loss_curve_svg.
        "curve": mark_safe(charts.loss_curve_svg(points, total_steps=job.total_steps)),
        "n_points": len(points),
        "log_tail": "\n".join(log_lines),
        "action_error": error,
        **(_outputs_context(job) if job.status == FinetuneJob.Status.SUCCEEDED else {}),
    }


def _outputs_context(job: FinetuneJob) -> dict[str, Any]:
    example = job.run.traces.order_by("example_index").values_list("inputs", flat=True).first()
    return {
        "output_model": artifacts.output_model(job),
        "downloads": artifacts.downloads(job),
        "snippet": artifacts.python_snippet(job, example=example),
        "serve_url": settings.BFT_SERVE_URL,
        "served_snippet": artifacts.served_program_snippet(job),
        "vllm_command": artifacts.vllm_command(job),
    }


def _get_job(project: Project, pk: int) -> FinetuneJob:
    return get_object_or_404(
        FinetuneJob.objects.select_related("run__program_version"), pk=pk, project=project
    )


@login_required
@require_GET
def job_detail(request: BftRequest, slug: str, pk: int) -> HttpResponse:
    project = get_project_for(request, slug).project
    job = get_object_or_404(
        FinetuneJob.objects.select_related(
            "student", "run__program_version__program", "created_by", "trace_set"
        ),
        pk=pk,
        project=project,
    )
    context = {"project": project, "nav": "jobs", **_status_context(job)}
    return render(request, "jobs/job_detail.html", context)


JOB_PAGE = live.LivePage(
    model=FinetuneJob,
    template="jobs/job_detail.html",
    fragment="job-status",
    detail_url="jobs:job-detail",
    status_context=_status_context,
)
# Cancel is cooperative: the trainer stops at its next step and keeps the checkpoint; a status
# poll after BFT_CANCEL_GRACE_S sends the hard stop. Retry resumes from the last checkpoint.
job_status = live.status_view(JOB_PAGE)
job_cancel = live.action_view(JOB_PAGE, queue.cancel)
job_retry = live.action_view(JOB_PAGE, queue.retry)


@login_required
@require_GET
def job_download(request: BftRequest, slug: str, pk: int, kind: str) -> HttpResponseBase:
    """A succeeded job's outputs; any member may download them."""
    project = get_project_for(request, slug).project
    return downloads.job_artifact(_get_job(project, pk), kind)
