"""What the live run and job pages share: timings, the status fragment, and cancel / retry.

Everything a status fragment shows comes from the database, and the queue's view of the row from
``queue.queue_info`` (the API's too): Redis is asked only for a queued row's position, or for an
active row whose heartbeat has gone stale. When Redis does not answer, the page says "queue
unavailable" and renders the rest from the row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.timezone import now
from django.views.decorators.http import require_GET, require_POST

from jobs.http import BftRequest
from jobs.models import QueuedWork
from jobs.permissions import get_project_for


def elapsed_s(row: QueuedWork) -> float | None:
    if row.started is None:
        return None
    end: datetime = row.finished if row.finished and row.is_terminal else now()
    return max(0.0, (end - row.started).total_seconds())


@dataclass(frozen=True)
class LivePage:
    """One kind of live page: the row's model, its page and status fragment, and its context."""

    model: type[QueuedWork]
    template: str  # the page; its status fragment is the partial "<template>#<fragment>"
    fragment: str
    detail_url: str
    status_context: Callable[..., dict[str, Any]]  # (row, *, error="") -> the fragment's data

    def render_status(
        self, request: BftRequest, project: Any, row: QueuedWork, error: str = ""
    ) -> HttpResponse:
        context = {"project": project, **self.status_context(row, error=error)}
        return render(request, f"{self.template}#{self.fragment}", context)


def status_view(page: LivePage) -> Callable[..., HttpResponse]:
    """The status fragment, polled every 2 s while the row is active and rendered without the
    trigger once it is not. While a row runs this costs its own row and what its context reads
    (a job: its thinned metric points); Redis is asked only for a queued row's position or a
    stale row."""

    @login_required
    @require_GET
    def view(request: BftRequest, slug: str, pk: int) -> HttpResponse:
        project = get_project_for(request, slug).project
        return page.render_status(
            request, project, get_object_or_404(page.model, pk=pk, project=project)
        )

    view.__name__ = f"{page.model._meta.model_name}_status"
    return view


def action_view(page: LivePage, action: Callable[..., QueuedWork]) -> Callable[..., HttpResponse]:
    """A POST view that runs ``action`` (queue.cancel or queue.retry) on a row of ``page``'s kind.

    A refusal (ValueError) is shown in the fragment (htmx) or as a message; either way the user
    sees the row as it is now.
    """

    @login_required
    @require_POST
    def view(request: BftRequest, slug: str, pk: int) -> HttpResponse:
        project = get_project_for(request, slug, need="operate").project
        row = get_object_or_404(page.model, pk=pk, project=project)
        error = ""
        try:
            action(row=row, user=request.user)
        except ValueError as exc:
            error = str(exc)
            if not request.htmx:
                messages.error(request, error)
        if request.htmx:
            return page.render_status(request, project, row, error)
        return redirect(page.detail_url, project.slug, row.pk)

    view.__name__ = f"{page.model._meta.model_name}_{action.__name__}"
    return view
