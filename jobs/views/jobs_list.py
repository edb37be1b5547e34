"""Everything queued or run in a project: bootstrap runs and fine-tune jobs in one table, with
state and kind filters; and the workers that are alive (queues, device) from their heartbeats."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.utils.timezone import now
from django.views.decorators.http import require_GET

from jobs.http import BftRequest
from jobs.models import BootstrapRun, FinetuneJob, Project, QueuedWork, Status
from jobs.permissions import get_project_for
from jobs.services import queue

LIMIT = 100
KINDS = {"run": "Bootstrap runs", "finetune": "Fine-tunes"}


@dataclass(frozen=True)
class Row:
    kind: str  # "run" | "finetune"
    obj: QueuedWork
    title: str
    done: int
    total: int | None

    @property
    def percent(self) -> int | None:
        if not self.total:
            return None
        return min(100, round(100 * self.done / self.total))

    @property
    def duration_s(self) -> float | None:
        started: datetime | None = self.obj.started
        if started is None:
            return None
        end = self.obj.finished if self.obj.is_terminal and self.obj.finished else now()
        return max(0.0, (end - started).total_seconds())


@dataclass(frozen=True)
class Filters:
    state: str = ""
    kind: str = ""

    @classmethod
    def from_query(cls, query: Any) -> Filters:
        state = query.get("state", "")
        kind = query.get("kind", "")
        return cls(
            state=state if state in Status.values or state == "active" else "",
            kind=kind if kind in KINDS else "",
        )

    def apply(self, queryset: Any) -> Any:
        if self.state == "active":
            return queryset.filter(status__in=QueuedWork.ACTIVE)
        if self.state:
            return queryset.filter(status=self.state)
        return queryset

    def querystring(self) -> str:
        return "&".join(f"{k}={v}" for k, v in (("state", self.state), ("kind", self.kind)) if v)


def rows_for(project: Project, filters: Filters) -> tuple[list[Row], bool]:
    """Newest first, at most LIMIT; and whether more matched."""
    rows: list[Row] = []
    if filters.kind in ("", "run"):
        runs = filters.apply(project.runs.all()).select_related(
            "created_by", "trainset", "program_version__program", "teacher"
        )
        for run in runs.order_by("-created")[: LIMIT + 1]:
            title = f"{run.program_version.program.name} v{run.program_version.version} on {run.trainset.name}, teacher {run.teacher.name}"
            rows.append(Row("run", run, title, run.done, run.total or None))
    if filters.kind in ("", "finetune"):
        jobs = filters.apply(project.finetune_jobs.all()).select_related("created_by", "student")
        for job in jobs.order_by("-created")[: LIMIT + 1]:
            title = f"{job.student.name} on run #{job.run_id} ({job.get_selection_display()})"
            rows.append(Row("finetune", job, title, job.step, job.total_steps))
    rows.sort(key=lambda r: r.obj.created, reverse=True)
    return rows[:LIMIT], len(rows) > LIMIT


def _table_context(request: BftRequest, project: Project) -> dict[str, Any]:
    filters = Filters.from_query(request.GET)
    rows, more = rows_for(project, filters)
    return {
        "project": project,
        "filters": filters,
        "qs": filters.querystring(),
        "rows": rows,
        "more": more,
        "any_active": any(r.obj.is_active for r in rows),
        "states": [("active", "active"), *Status.choices],
        "kinds": KINDS,
    }


def _workers_context(project: Project) -> dict[str, Any]:
    health = queue.queue_health()
    by_rq_id: dict[str, tuple[str, QueuedWork]] = {}
    current = [w.current_job_id for w in health.workers if w.current_job_id]
    if current:  # what each busy worker runs, when it is this project's
        for run in BootstrapRun.objects.filter(project=project, rq_job_id__in=current):
            by_rq_id[str(run.rq_job_id)] = ("run", run)
        for job in FinetuneJob.objects.filter(project=project, rq_job_id__in=current):
            by_rq_id[str(job.rq_job_id)] = ("finetune", job)
    workers = [
        {"info": w, "current": by_rq_id.get(w.current_job_id or ""), "age": _age(w.last_heartbeat)}
        for w in health.workers
    ]
    return {"project": project, "health": health, "workers": workers}


def _age(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        from datetime import UTC

        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (now() - moment).total_seconds())


@login_required
@require_GET
def jobs_list(request: BftRequest, slug: str) -> HttpResponse:
    project = get_project_for(request, slug).project
    context = {"nav": "jobs", **_table_context(request, project), **_workers_context(project)}
    return render(request, "jobs/jobs_list.html", context)


@login_required
@require_GET
def jobs_table(request: BftRequest, slug: str) -> HttpResponse:
    """The table, polled while any row in it is active."""
    project = get_project_for(request, slug).project
    return render(request, "jobs/jobs_list.html#jobs-table", _table_context(request, project))


@login_required
@require_GET
def workers(request: BftRequest, slug: str) -> HttpResponse:
    """The workers and queues panel, polled while the page is visible (it never ends)."""
    project = get_project_for(request, slug).project
    return render(request, "jobs/jobs_list.html#workers", _workers_context(project))
