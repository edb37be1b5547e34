"""The Models page: register local / LiteLLM models and test them on a worker."""

from __future__ import annotations

from datetime import datetime

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from jobs.forms.language_models import LanguageModelForm
from jobs.http import BftRequest
from jobs.models import LanguageModel
from jobs.permissions import get_project_for
from jobs.services import comparisons
from jobs.services.language_models import MODEL_TEST_PROMPT

QUEUE_UNAVAILABLE = "The queue is unavailable (Redis does not answer), so the test was not sent. Try again once it is back."


@login_required
@require_GET
def model_list(request: BftRequest, slug: str) -> HttpResponse:
    project = get_project_for(request, slug).project
    models = list(project.models.select_related("source_job").order_by("name"))
    # Each fine-tuned model's latest verdict as the student (one query).
    verdicts = comparisons.latest_verdicts([m for m in models if m.source_job_id])
    context = {
        "project": project,
        "nav": "models",
        "models": models,
        "verdicts": verdicts,
        "default_test_prompt": MODEL_TEST_PROMPT,
    }
    return render(request, "jobs/model_list.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def model_create(request: BftRequest, slug: str) -> HttpResponse:
    project = get_project_for(request, slug, need="operate").project
    form = LanguageModelForm(request.POST or None, project=project)
    if request.method == "POST" and form.is_valid():
        model = form.register(request.user)
        messages.success(
            request, f"Model “{model.name}” registered. Use “Test” to try it on a worker."
        )
        return redirect("jobs:model-list", project.slug)
    status = 400 if form.is_bound else 200
    context = {"project": project, "nav": "models", "form": form}
    return render(request, "jobs/model_form.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def model_edit(request: BftRequest, slug: str, pk: int) -> HttpResponse:
    """Change a model's settings; they apply to runs and fine-tunes started from now on."""
    project = get_project_for(request, slug, need="operate").project
    model = get_object_or_404(LanguageModel, pk=pk, project=project)
    form = LanguageModelForm(request.POST or None, instance=model, project=project)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Model “{model.name}” saved.")
        return redirect("jobs:model-list", project.slug)
    status = 400 if form.is_bound else 200
    context = {"project": project, "nav": "models", "form": form, "model": model}
    return render(request, "jobs/model_form.html", context, status=status)


def _test_state(model: LanguageModel, since: datetime | None) -> str:
    """pending: asked at ``since`` and not answered since; else done / untested."""
    if since is not None and (model.last_test_at is None or model.last_test_at < since):
        return "pending"
    return "done" if model.last_test_at else "untested"


def _render_test(
    request: BftRequest,
    project: object,
    model: LanguageModel,
    since: datetime | None,
    *,
    refused: str = "",
    status: int = 200,
) -> HttpResponse:
    context = {
        "project": project,
        "model": model,
        "state": "refused" if refused else _test_state(model, since),
        "refused": refused,
        "since": since,
        "default_test_prompt": MODEL_TEST_PROMPT,
    }
    return render(request, "jobs/model_list.html#model-test", context, status=status)


@login_required
@require_POST
def model_test(request: BftRequest, slug: str, pk: int) -> HttpResponse:
    """Send one short prompt through the engine on a worker; the fragment polls for the answer."""
    from jobs.services import language_models, queue

    project = get_project_for(request, slug, need="operate").project
    model = get_object_or_404(LanguageModel, pk=pk, project=project)
    since = timezone.now()
    try:
        language_models.enqueue_model_test(
            model=model,
            user=request.user,
            prompt=request.POST.get("prompt") or language_models.MODEL_TEST_PROMPT,
        )
    except (ValueError, queue.QueueUnavailable) as exc:  # ModelPolicyError is a ValueError
        refused = str(exc) if isinstance(exc, ValueError) else QUEUE_UNAVAILABLE
        status = 400 if isinstance(exc, ValueError) else 503
        if request.htmx:
            return _render_test(request, project, model, None, refused=refused, status=status)
        messages.error(request, refused)
        return redirect("jobs:model-list", project.slug)
    if request.htmx:
        return _render_test(request, project, model, since)
    messages.info(request, f"Testing “{model.name}” on a worker; reload to see the answer.")
    return redirect("jobs:model-list", project.slug)


@login_required
@require_GET
def model_test_status(request: BftRequest, slug: str, pk: int) -> HttpResponse:
    """Polled by the test fragment while the answer is pending."""
    project = get_project_for(request, slug).project
    model = get_object_or_404(LanguageModel, pk=pk, project=project)
    try:
        since = parse_datetime(request.GET.get("since", ""))
    except ValueError:  # well formed but not a date (month 13): treat as no request time
        since = None
    return _render_test(request, project, model, since)
