"""Run configuration: the bootstrap form (with its LM-call estimate) and the fine-tune form (with a
training-data preview). The live run and job pages are in run_live.py, job_live.py, jobs_list.py.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from jobs.forms.finetunes import FinetuneForm
from jobs.forms.runs import BootstrapRunForm
from jobs.models import BootstrapRun, FinetuneJob, ProgramVersion, Project, Trainset, TrainsetRow
from jobs.permissions import get_project_for
from jobs.services import finetunes, runs, trace_sets

# --- bootstrap --------------------------------------------------------------------------------


@login_required
@require_GET
def run_list(request: HttpRequest, slug: str) -> HttpResponse:
    project = get_project_for(request, slug)
    runs = project.runs.select_related("trainset", "program_version__program", "teacher")
    return render(request, "jobs/run_list.html", {"project": project, "nav": "runs", "runs": runs})


def _estimate(project: Project, data: Any) -> dict[str, Any]:
    """Examples × modules for the chosen trainset, program and limit; and whether they fit."""
    from jobs.engine.programs import ProgramSpecError, check_fields

    result: dict[str, Any] = {"calls": None, "problems": [], "outputs": []}
    trainset = Trainset.objects.filter(
        project=project, status=Trainset.Status.READY, pk=_int(data.get("trainset"))
    ).first()
    version = (
        ProgramVersion.objects.filter(
            program__project=project, pk=_int(data.get("program_version"))
        )
        .select_related("program")
        .first()
    )
    if trainset is None or version is None:
        return result
    try:
        spec = version.to_spec()
    except ProgramSpecError as e:
        result["problems"] = [f"the program's spec is invalid: {e}"]
        return result
    result["outputs"] = list(spec.output_fields)
    n_train = trainset.rows.filter(split=TrainsetRow.Split.TRAIN).count()
    limit = _int(data.get("limit"))
    examples = min(n_train, limit) if limit and limit > 0 else n_train
    modules = len(spec.modules)
    demo_calls = 0
    if data.get("reason_demos") in ("on", "true", "1"):
        demo_calls = min(n_train, max(0, _int(data.get("num_demos")) or 0)) * modules
    result.update(
        examples=examples,
        modules=modules,
        demo_calls=demo_calls,
        calls=examples * modules + demo_calls,
    )
    field = (data.get("metric_field") or "").strip()
    result["problems"] = check_fields(
        spec, trainset.field_names, label_fields=[field] if field else []
    )
    if field and field not in spec.output_fields:
        result["problems"].append(
            f"metric field '{field}' is not a program output ({', '.join(spec.output_fields)})"
        )
    return result


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _initial_run(project: Project, request: HttpRequest) -> dict[str, Any]:
    """Sensible first choices: the newest trainset, the newest program's latest version, its first output."""
    initial: dict[str, Any] = {"metric": "normalized_match"}
    trainset_pk = _int(request.GET.get("trainset"))
    trainset = project.trainsets.filter(status=Trainset.Status.READY)
    trainset = (trainset.filter(pk=trainset_pk) if trainset_pk else trainset).first()
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
def run_create(request: HttpRequest, slug: str) -> HttpResponse:
    project = get_project_for(request, slug, need="operate")
    if request.method == "POST":
        form = BootstrapRunForm(request.POST, project=project)
        if form.is_valid():
            data = form.cleaned_data
            try:
                run = runs.create_bootstrap_run(
                    project=project,
                    trainset=data["trainset"],
                    program_version=data["program_version"],
                    teacher=data["teacher"],
                    metric=data["metric_spec"],
                    config=data["bootstrap_config"],
                    user=request.user,
                    skip_missing=data["skip_missing"],
                )
            except ValueError as e:
                form.add_error(None, str(e))
            else:
                messages.success(
                    request, f"Run #{run.pk} queued: {run.total} examples for the teacher."
                )
                return redirect("jobs:run-detail", project.slug, run.pk)
        estimate_data: Any = request.POST
    else:
        form = BootstrapRunForm(initial=_initial_run(project, request), project=project)
        estimate_data = {
            k: form[k].value() for k in ("trainset", "program_version", "limit", "metric_field")
        }
    context = {
        "project": project,
        "nav": "runs",
        "form": form,
        "estimate": _estimate(project, estimate_data),
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
def run_estimate(request: HttpRequest, slug: str) -> HttpResponse:
    """The estimate fragment, refreshed (htmx) as the bootstrap form changes."""
    project = get_project_for(request, slug)
    return render(
        request,
        "jobs/run_form.html#run-estimate",
        {"project": project, "estimate": _estimate(project, request.GET)},
    )


# --- fine-tune --------------------------------------------------------------------------------


def _selection_counts(run: BootstrapRun) -> dict[str, int]:
    return {
        value: run.traces.for_selection(value).count() for value in FinetuneJob.Selection.values
    }


def _get_run(project: Project, pk: int) -> BootstrapRun:
    return get_object_or_404(
        BootstrapRun.objects.select_related("program_version__program", "trainset"),
        pk=pk,
        project=project,
    )


def _preview(run: BootstrapRun, data: Any, form: FinetuneForm) -> dict[str, Any]:
    """The preview of what the form, as filled in so far, would train on."""
    bound = form.is_bound
    selection = data.get("selection") if bound else form["selection"].initial
    trace_set_pk = data.get("trace_set") if bound else None
    return trace_sets.preview(
        run,
        selection=selection
        if selection in FinetuneJob.Selection.values
        else FinetuneJob.Selection.APPROVED,
        trace_set=run.trace_sets.filter(pk=_int(trace_set_pk)).first()
        if _int(trace_set_pk)
        else None,
        multitask=(data.get("multitask") in ("on", "true", "1")) if bound else True,
        exclude_demos=(data.get("exclude_demos") in ("on", "true", "1")) if bound else True,
    )


@login_required
@require_http_methods(["GET", "POST"])
def run_finetune(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = get_project_for(request, slug, need="operate")
    run = _get_run(project, pk)
    counts = _selection_counts(run)
    if request.method == "POST":
        form = FinetuneForm(request.POST, run=run)
        if form.is_valid():
            data = form.cleaned_data
            try:
                job = finetunes.create_finetune_job(
                    run=run,
                    student=data["student"],
                    config=data["config"],
                    selection=data["selection"],
                    multitask=data["multitask"],
                    exclude_demos=data["exclude_demos"],
                    user=request.user,
                    trace_set=data.get("trace_set"),
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
        "preview": _preview(run, request.POST, form),
    }
    return render(request, "jobs/run_finetune.html", context, status=400 if form.is_bound else 200)


def form_student_initial(run: BootstrapRun) -> int | None:
    student = run.project.models.filter(kind="local", fine_tunable=True).order_by("pk").first()
    return student.pk if student else None


@login_required
@require_GET
def run_finetune_preview(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """The training-data preview fragment, refreshed (htmx) when selection or formatting changes."""
    project = get_project_for(request, slug)
    run = _get_run(project, pk)
    form = FinetuneForm(request.GET, run=run)
    context = {
        "project": project,
        "run": run,
        "preview": _preview(run, request.GET, form),
    }
    return render(request, "jobs/run_finetune.html#finetune-preview", context)
