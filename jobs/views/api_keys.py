"""A project's API keys (owners only): make one (its secret shown once, on the page that answers
the form), revoke one; and the project's webhooks, as registered through the API."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from jobs.forms.api_keys import ApiKeyForm
from jobs.http import BftRequest
from jobs.models import ApiKey, Project
from jobs.permissions import get_project_for
from jobs.services import api_keys


def _render(
    request: BftRequest,
    project: Project,
    form: ApiKeyForm,
    *,
    new_key: str = "",
    status: int = 200,
) -> HttpResponse:
    context = {
        "project": project,
        "nav": "keys",
        "keys": project.api_keys.select_related("created_by", "revoked_by"),
        "webhooks": project.webhooks.order_by("-created"),
        "form": form,
        "new_key": new_key,
    }
    return render(request, "jobs/api_key_list.html", context, status=status)


@login_required
@require_GET
def key_list(request: BftRequest, slug: str) -> HttpResponse:
    project = get_project_for(request, slug, need="own").project
    return _render(request, project, ApiKeyForm())


@never_cache  # the answer holds the key: no cache may keep it
@login_required
@require_POST
def key_create(request: BftRequest, slug: str) -> HttpResponse:
    project = get_project_for(request, slug, need="own").project
    form = ApiKeyForm(request.POST)
    if not form.is_valid():
        return _render(request, project, form, status=400)
    key, raw = api_keys.create_api_key(
        project=project,
        user=request.user,
        name=form.cleaned_data["name"],
        scope=form.cleaned_data["scope"],
    )
    messages.success(request, f"Key “{key.name}” made. Copy it now: it is not shown again.")
    return _render(request, project, ApiKeyForm(), new_key=raw, status=201)


@login_required
@require_POST
def key_revoke(request: BftRequest, slug: str, pk: int) -> HttpResponse:
    project = get_project_for(request, slug, need="own").project
    key = get_object_or_404(ApiKey, pk=pk, project=project)
    if api_keys.revoke_api_key(key=key, user=request.user):
        messages.success(request, f"Key “{key.name}” revoked: requests with it now fail.")
    else:
        messages.info(request, f"Key “{key.name}” was already revoked.")
    return redirect("jobs:key-list", project.slug)
