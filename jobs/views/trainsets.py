"""Trainsets: upload (streamed validation), list, detail with preview, fields and split."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from jobs.forms.trainsets import SplitForm, TrainsetUploadForm
from jobs.http import BftRequest, checks_body_size
from jobs.models import Project, Trainset, TrainsetRow
from jobs.permissions import get_project_for
from jobs.services import trainsets

ROWS_PER_PAGE = 25


@login_required
@require_GET
def trainset_list(request: BftRequest, slug: str) -> HttpResponse:
    project = get_project_for(request, slug).project
    rows = project.trainsets.select_related("created_by")
    return render(
        request,
        "jobs/trainset_list.html",
        {"project": project, "nav": "trainsets", "trainsets": rows},
    )


@checks_body_size  # here, with the upload's own limit and page, instead of the middleware
@login_required
@require_http_methods(["GET", "POST"])
@csrf_exempt  # checked in _upload: CSRF middleware would read the whole body to find the token
def trainset_upload(request: BftRequest, slug: str) -> HttpResponse:
    project = get_project_for(request, slug, need="operate").project
    refusal = trainsets.request_too_large(request.META)
    if refusal:  # before anything reads the body
        context = {**_upload_context(project, TrainsetUploadForm()), "refusal": refusal}
        return render(request, "jobs/trainset_upload.html", context, status=413)
    return _upload(request, project)


@csrf_protect
def _upload(request: BftRequest, project: Project) -> HttpResponse:
    form = TrainsetUploadForm(request.POST or None, request.FILES or None)
    outcome = None
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            outcome = trainsets.import_upload(
                project=project,
                user=request.user,
                upload=upload,
                name=trainsets.upload_name(form.cleaned_data["name"], upload.name),
                fmt=form.cleaned_data["fmt"],
                skip_bad_rows=form.cleaned_data["skip_bad_rows"],
                dev_ratio=form.cleaned_data["dev_ratio"],
                split_seed=form.cleaned_data["split_seed"],
            )
        except ValueError as e:  # the split seed does not fit
            form.add_error("split_seed", str(e))
        if outcome is not None and outcome.trainset is not None:
            if outcome.queue_error:
                messages.error(request, outcome.queue_error)
            elif outcome.queued:
                messages.info(
                    request,
                    "This is a large file: it is being validated and imported in the background.",
                )
            else:
                text = f"Imported {outcome.valid_count} rows."
                if outcome.error_count:
                    text += f" Skipped {outcome.error_count} bad row(s)."
                messages.success(request, text)
            return redirect("jobs:trainset-detail", project.slug, outcome.trainset.pk)
    context = {**_upload_context(project, form), "outcome": outcome}
    return render(
        request, "jobs/trainset_upload.html", context, status=400 if form.is_bound else 200
    )


def _upload_context(project: Project, form: TrainsetUploadForm) -> dict[str, object]:
    return {
        "project": project,
        "nav": "trainsets",
        "form": form,
        "max_bytes": settings.BFT_UPLOAD_MAX_BYTES,
        "max_rows": settings.BFT_UPLOAD_MAX_ROWS,
        "async_rows": trainsets.async_rows_threshold(),
    }


def _get_trainset(project: object, pk: int) -> Trainset:
    return get_object_or_404(Trainset.objects.select_related("created_by"), pk=pk, project=project)


@login_required
@require_GET
def trainset_detail(request: BftRequest, slug: str, pk: int) -> HttpResponse:
    project = get_project_for(request, slug).project
    trainset = _get_trainset(project, pk)
    context: dict[str, Any] = {
        "project": project,
        "nav": "trainsets",
        "trainset": trainset,
        "progress": trainsets.import_progress(trainset)
        if trainset.status == Trainset.Status.IMPORTING
        else None,
    }
    if trainset.status == Trainset.Status.READY:
        rows = trainset.rows.order_by("index").only("index", "data", "split")
        context["page"] = Paginator(rows, ROWS_PER_PAGE).get_page(request.GET.get("page"))
        context["dev_count"] = trainset.rows.filter(split=TrainsetRow.Split.DEV).count()
        context["train_count"] = trainset.row_count - context["dev_count"]
        context["split_form"] = SplitForm(
            initial={"dev_ratio": trainset.dev_ratio, "split_seed": trainset.split_seed}
        )
        context["run_count"] = trainset.runs.count()  # a used trainset's split is fixed
    return render(request, "jobs/trainset_detail.html", context)


@login_required
@require_GET
def trainset_status(request: BftRequest, slug: str, pk: int) -> HttpResponse:
    """Polled while a background import runs; once it ends, the whole page reloads."""
    project = get_project_for(request, slug).project
    trainset = _get_trainset(project, pk)
    progress = (
        trainsets.import_progress(trainset)
        if trainset.status == Trainset.Status.IMPORTING
        else None
    )
    context = {"project": project, "trainset": trainset, "progress": progress}
    response = render(request, "jobs/trainset_detail.html#trainset-status", context)
    if trainset.status != Trainset.Status.IMPORTING and request.htmx:
        response["HX-Refresh"] = "true"
    return response


@login_required
@require_POST
def trainset_split(request: BftRequest, slug: str, pk: int) -> HttpResponse:
    project = get_project_for(request, slug, need="operate").project
    trainset = _get_trainset(project, pk)
    form = SplitForm(request.POST)
    if trainset.status != Trainset.Status.READY:
        messages.error(request, "Only a ready trainset can be split.")
    elif not form.is_valid():
        for field, errors in form.errors.items():
            messages.error(request, f"{field}: {' '.join(map(str, errors))}")
    else:
        try:
            trainset.resplit(form.cleaned_data["dev_ratio"], form.cleaned_data["split_seed"])
        except ValueError as e:  # runs used it, or the seed does not fit
            messages.error(request, str(e))
        else:
            messages.success(
                request, f"Split again: dev ratio {trainset.dev_ratio}, seed {trainset.split_seed}."
            )
    return redirect("jobs:trainset-detail", project.slug, trainset.pk)
