"""The playground: try a program on your own input with up to four models side by side; the
answers come from a worker and the page polls for them."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from jobs.forms.playground import PlaygroundForm
from jobs.http import BftRequest
from jobs.models import PlaygroundTry
from jobs.permissions import Need, get_project_for
from jobs.services import playground, queue
from jobs.values import parse_int


@login_required
@require_http_methods(["GET", "POST"])
def playground_page(request: BftRequest, slug: str) -> HttpResponse:
    need: Need = "operate" if request.method == "POST" else "view"
    project = get_project_for(request, slug, need=need).project
    shown = PlaygroundTry.objects.filter(
        project=project, pk=parse_int(request.GET.get("try")) or 0
    ).first()
    if request.method == "POST":
        form = PlaygroundForm(request.POST, project=project)
        if form.is_valid():
            data = form.cleaned_data
            try:
                attempt = playground.create_try(
                    project=project,
                    program_version=data["program_version"],
                    models=list(data["models"]),
                    user=request.user,
                    inputs=data["inputs"],
                    row=data["row"],
                )
            except (ValueError, queue.QueueUnavailable) as e:
                form.add_error(None, str(e))
            else:
                url = reverse("jobs:playground", args=[project.slug])
                return redirect(
                    f"{url}?try={attempt.pk}&program_version={attempt.program_version_id}"
                )
    else:
        # A GET only chooses the program (its inputs follow it) and shows a try, whose models
        # and inputs fill the form again: never a bound, erroring form.
        form = PlaygroundForm(
            initial=PlaygroundForm.initial_from(shown, request.GET.get("program_version")),
            project=project,
        )
    context = {
        "project": project,
        "nav": "playground",
        "form": form,
        "shown": shown,
        "recent": playground.recent_tries(project),
    }
    status = 400 if request.method == "POST" else 200
    return render(request, "jobs/playground.html", context, status=status)


@login_required
@require_GET
def playground_try(request: BftRequest, slug: str, pk: int) -> HttpResponse:
    """One try's answers; polled while the worker is on it."""
    project = get_project_for(request, slug).project
    attempt = get_object_or_404(PlaygroundTry, pk=pk, project=project)
    return render(
        request, "jobs/playground.html#try-result", {"project": project, "shown": attempt}
    )
