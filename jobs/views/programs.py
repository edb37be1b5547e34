"""Programs: build from a form (modules chained in order) or a JSON/YAML spec; versions; fit to trainsets.

The spec parser (jobs/engine/programs.py) is the single judge of a spec; forms only gather its
parts. Nothing in a spec is ever executed.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Max
from django.http import Http404, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from jobs.forms.programs import (
    MODULES_PREFIX,
    ProgramDraft,
    ProgramModuleForm,
    ProgramModuleFormSet,
    ProgramSpecForm,
    format_descriptions,
    parse_spec,
)
from jobs.http import BftRequest
from jobs.models import Program, Project, Trainset
from jobs.permissions import get_project_for
from jobs.services import programs
from jobs.values import parse_int


def _initial_modules(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": m.get("name", ""),
            "type": m.get("type", "Predict"),
            "signature": m.get("signature", ""),
            "instructions": m.get("instructions", ""),
            "field_descriptions": format_descriptions(m.get("fields") or {}),
        }
        for m in spec.get("modules", [])
    ]


def _fits(project: Project, spec: Any) -> list[dict[str, Any]]:
    """Each ready trainset: does it hold the program's inputs and a label for at least one output?"""
    return [
        {
            "trainset": trainset,
            "problems": programs.fit_problems(spec, trainset.field_names, None, need_a_label=True),
            "labels": [name for name in spec.output_fields if name in trainset.field_names],
        }
        for trainset in project.trainsets.filter(status=Trainset.Status.READY)
    ]


@login_required
@require_GET
def program_list(request: BftRequest, slug: str) -> HttpResponse:
    project = get_project_for(request, slug).project
    rows = project.programs.annotate(latest=Max("versions__version")).select_related("created_by")
    return render(
        request,
        "jobs/program_list.html",
        {"project": project, "nav": "programs", "programs": rows},
    )


def _render_form(
    request: BftRequest,
    project: Project,
    draft: ProgramDraft,
    *,
    program: Program | None = None,
    status: int = 200,
) -> HttpResponse:
    context = {
        "project": project,
        "nav": "programs",
        "draft": draft,
        "program": program,
        "prefix": MODULES_PREFIX,
    }
    return render(request, "jobs/program_form.html", context, status=status)


def _total_forms(value: Any) -> int:
    """The posted TOTAL_FORMS as a count within 0..max_num; 1 when it is not a whole number."""
    total = parse_int(value)
    return 1 if total is None else min(max(total, 0), ProgramModuleFormSet.max_num)


def _add_module_row(data: QueryDict) -> QueryDict:
    """The plain-POST "add module": the same data with one more (empty) form."""
    data = data.copy()
    total = _total_forms(data.get(f"{MODULES_PREFIX}-TOTAL_FORMS"))
    data[f"{MODULES_PREFIX}-TOTAL_FORMS"] = str(total + 1)
    return data


@login_required
@require_http_methods(["GET", "POST"])
def program_create(request: BftRequest, slug: str) -> HttpResponse:
    project = get_project_for(request, slug, need="operate").project
    if request.method == "GET":
        draft = ProgramDraft(None)
        draft.formset = ProgramModuleFormSet(prefix=MODULES_PREFIX, initial=[{"type": "Predict"}])
        return _render_form(request, project, draft)
    if "add_module" in request.POST:
        return _render_form(request, project, ProgramDraft(_add_module_row(request.POST)))
    draft = ProgramDraft(request.POST, request.FILES)
    spec = draft.check()
    if spec is None:
        return _render_form(request, project, draft, status=400)
    try:
        program = programs.create_program(project=project, spec=spec, user=request.user)
    except programs.ProgramNameTaken as e:
        draft.error_key, draft.error = "name", str(e)
        return _render_form(request, project, draft, status=400)
    messages.success(request, f"Program “{program.name}” saved as version 1.")
    return redirect("jobs:program-detail", project.slug, program.pk)


@login_required
@require_http_methods(["GET", "POST"])
def program_edit(request: BftRequest, slug: str, pk: int) -> HttpResponse:
    """Editing never changes a version: it saves version N+1."""
    project = get_project_for(request, slug, need="operate").project
    program = get_object_or_404(Program, pk=pk, project=project)
    if request.method == "GET":
        latest = program.latest_version
        draft = ProgramDraft(None, fixed_name=program.name)
        spec = latest.spec if latest else {"modules": []}
        draft.formset = ProgramModuleFormSet(
            prefix=MODULES_PREFIX, initial=_initial_modules(spec) or [{"type": "Predict"}]
        )
        draft.spec_form = ProgramSpecForm(initial={"spec": json.dumps(spec, indent=2)})
        return _render_form(request, project, draft, program=program)
    if "add_module" in request.POST:
        return _render_form(
            request,
            project,
            ProgramDraft(_add_module_row(request.POST), fixed_name=program.name),
            program=program,
        )
    draft = ProgramDraft(request.POST, request.FILES, fixed_name=program.name)
    spec = draft.check()
    if spec is None:
        return _render_form(request, project, draft, program=program, status=400)
    version, created = programs.add_version(program=program, spec=spec, user=request.user)
    if not created:
        messages.info(request, f"No changes: version {version.version} already has this spec.")
        return redirect("jobs:program-detail", project.slug, program.pk)
    messages.success(request, f"Saved version {version.version} of “{program.name}”.")
    return redirect("jobs:program-detail", project.slug, program.pk)


@login_required
@require_POST
def program_validate(request: BftRequest, slug: str) -> HttpResponse:
    """Live validation (htmx, as you type): the parser's verdict on the posted form or spec."""
    project = get_project_for(request, slug, need="operate").project
    fixed = request.POST.get("fixed_name") or None
    if fixed is not None and not project.programs.filter(name=fixed).exists():
        fixed = None
    draft = ProgramDraft(request.POST, request.FILES, fixed_name=fixed)
    draft.check()
    return render(
        request, "jobs/program_form.html#spec-check", {"project": project, "draft": draft}
    )


@login_required
@require_GET
def program_module_row(request: BftRequest, slug: str) -> HttpResponse:
    """One more module form for the formset (htmx "add module"), plus the new TOTAL_FORMS out of band."""
    project = get_project_for(request, slug, need="operate").project
    index = _total_forms(request.GET.get(f"{MODULES_PREFIX}-TOTAL_FORMS"))
    form = ProgramModuleForm(
        prefix=f"{MODULES_PREFIX}-{index}",
        initial={"type": "Predict"},
        use_required_attribute=False,
    )
    context = {
        "project": project,
        "form": form,
        "index": index,
        "total": index + 1,
        "prefix": MODULES_PREFIX,
        "oob": True,
    }
    return render(request, "jobs/program_form.html#module-row", context)


@login_required
@require_GET
def program_detail(
    request: BftRequest, slug: str, pk: int, version: int | None = None
) -> HttpResponse:
    project = get_project_for(request, slug).project
    program = get_object_or_404(
        Program.objects.select_related("created_by"), pk=pk, project=project
    )
    versions = list(program.versions.select_related("created_by").order_by("-version"))
    if not versions:
        raise Http404("This program has no versions.")
    shown = (
        versions[0]
        if version is None
        else next((v for v in versions if v.version == version), None)
    )
    if shown is None:
        raise Http404("No such version.")
    spec, key, message = parse_spec(shown.spec)
    context = {
        "project": project,
        "nav": "programs",
        "program": program,
        "versions": versions,
        "shown": shown,
        "is_latest": shown.pk == versions[0].pk,
        "spec": spec,
        "spec_error": f"{key}: {message}" if message else "",
        "spec_json": json.dumps(shown.spec, indent=2),
        "fits": _fits(project, spec) if spec is not None else [],
    }
    return render(request, "jobs/program_detail.html", context)
