"""Programs: build from a form (modules chained in order) or a JSON/YAML spec; versions; fit to trainsets.

The spec parser (jobs/engine/programs.py) is the single judge of a spec; forms only gather its
parts. Nothing in a spec is ever executed.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from jobs.forms.programs import (
    ProgramModuleForm,
    ProgramModuleFormSet,
    ProgramNameForm,
    ProgramSpecForm,
    format_descriptions,
)
from jobs.models import Program, ProgramVersion, Project, Trainset
from jobs.permissions import get_project_for

PREFIX = "modules"


def _parse(source: Any, fmt: str | None = None) -> tuple[Any, str, str]:
    """(spec, error key, error message): the spec, or the parser's first complaint."""
    from jobs.engine.programs import ProgramSpecError, parse_program_spec

    try:
        return parse_program_spec(source, fmt=fmt), "", ""
    except ProgramSpecError as e:
        return None, e.key, e.message


class Draft:
    """What a program form POST holds: the forms, the spec dict they make, and its parse result."""

    def __init__(
        self, data: QueryDict | None, files: Any = None, *, fixed_name: str | None = None
    ) -> None:
        self.mode = (data or {}).get("mode", "form")
        self.name_form = ProgramNameForm(
            data if self.mode == "form" else None, initial={"name": fixed_name or ""}
        )
        self.formset = ProgramModuleFormSet(data if self.mode == "form" else None, prefix=PREFIX)
        self.spec_form = ProgramSpecForm(
            data if self.mode == "spec" else None, files if self.mode == "spec" else None
        )
        self.fixed_name = fixed_name
        self.spec: Any = None
        self.error_key = ""
        self.error = ""

    def check(self) -> bool:
        """Parse what was posted; on failure error_key/error say where and why."""
        if self.mode == "spec":
            if not self.spec_form.is_valid():
                self.error_key, self.error = (
                    "(document)",
                    " ".join(self.spec_form.non_field_errors()) or "invalid input",
                )
                return False
            source: Any = self.spec_form.cleaned_data["source"]
            fmt = self.spec_form.cleaned_data["fmt"]
            if self.fixed_name is not None:
                loaded, key, message = _parse(source, fmt)
                if loaded is None:
                    self.error_key, self.error = key, message
                    return False
                source, fmt = {**loaded.to_dict(), "name": self.fixed_name}, None
        else:
            if self.fixed_name is None and not self.name_form.is_valid():
                self.error_key, self.error = (
                    "name",
                    " ".join(self.name_form.errors.get("name", ["is required"])),
                )
                return False
            if not self.formset.is_valid():
                self.error_key, self.error = (
                    "modules",
                    " ".join(self.formset.non_form_errors()) or "check the modules",
                )
                return False
            modules = [m for m in (f.to_spec_dict() for f in self.formset.forms) if m is not None]
            name = (
                self.fixed_name
                if self.fixed_name is not None
                else self.name_form.cleaned_data["name"].strip()
            )
            source = {"name": name, "modules": modules}
            fmt = None
        self.spec, self.error_key, self.error = _parse(source, fmt)
        return self.spec is not None


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
    from jobs.engine.programs import check_fields

    result = []
    for trainset in project.trainsets.filter(status=Trainset.Status.READY):
        names = trainset.field_names
        problems = check_fields(spec, names)
        labels = [name for name in spec.output_fields if name in names]
        if not labels:
            problems.append(
                f"no label column for any output ({', '.join(spec.output_fields)}), so no metric can score it"
            )
        result.append({"trainset": trainset, "problems": problems, "labels": labels})
    return result


@login_required
@require_GET
def program_list(request: HttpRequest, slug: str) -> HttpResponse:
    project = get_project_for(request, slug)
    programs = project.programs.annotate(latest=Max("versions__version")).select_related(
        "created_by"
    )
    return render(
        request,
        "jobs/program_list.html",
        {"project": project, "nav": "programs", "programs": programs},
    )


def _render_form(
    request: HttpRequest,
    project: Project,
    draft: Draft,
    *,
    program: Program | None = None,
    status: int = 200,
) -> HttpResponse:
    context = {
        "project": project,
        "nav": "programs",
        "draft": draft,
        "program": program,
        "prefix": PREFIX,
    }
    return render(request, "jobs/program_form.html", context, status=status)


def _total_forms(value: Any) -> int:
    """The posted TOTAL_FORMS as a count within 0..max_num; 1 when it is not a whole number."""
    try:
        total = int(value)
    except (TypeError, ValueError):
        return 1
    return min(max(total, 0), ProgramModuleFormSet.max_num)


def _add_module_row(data: QueryDict) -> QueryDict:
    """The plain-POST "add module": the same data with one more (empty) form."""
    data = data.copy()
    total = _total_forms(data.get(f"{PREFIX}-TOTAL_FORMS"))
    data[f"{PREFIX}-TOTAL_FORMS"] = str(total + 1)
    return data


@login_required
@require_http_methods(["GET", "POST"])
def program_create(request: HttpRequest, slug: str) -> HttpResponse:
    project = get_project_for(request, slug, need="operate")
    if request.method == "GET":
        draft = Draft(None)
        draft.formset = ProgramModuleFormSet(prefix=PREFIX, initial=[{"type": "Predict"}])
        return _render_form(request, project, draft)
    if "add_module" in request.POST:
        return _render_form(request, project, Draft(_add_module_row(request.POST)))
    draft = Draft(request.POST, request.FILES)
    if not draft.check():
        return _render_form(request, project, draft, status=400)
    try:
        with transaction.atomic():
            program = Program.objects.create(
                project=project, name=draft.spec.name, created_by=request.user
            )
            ProgramVersion.objects.create(
                program=program, version=1, spec=draft.spec.to_dict(), created_by=request.user
            )
    except IntegrityError:
        draft.error_key = "name"
        draft.error = f"this project already has a program named “{draft.spec.name}”; edit it to add a version"
        return _render_form(request, project, draft, status=400)
    messages.success(request, f"Program “{program.name}” saved as version 1.")
    return redirect("jobs:program-detail", project.slug, program.pk)


@login_required
@require_http_methods(["GET", "POST"])
def program_edit(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Editing never changes a version: it saves version N+1."""
    project = get_project_for(request, slug, need="operate")
    program = get_object_or_404(Program, pk=pk, project=project)
    latest = program.latest_version
    if request.method == "GET":
        draft = Draft(None, fixed_name=program.name)
        spec = latest.spec if latest else {"modules": []}
        draft.formset = ProgramModuleFormSet(
            prefix=PREFIX, initial=_initial_modules(spec) or [{"type": "Predict"}]
        )
        draft.spec_form = ProgramSpecForm(initial={"spec": json.dumps(spec, indent=2)})
        return _render_form(request, project, draft, program=program)
    if "add_module" in request.POST:
        return _render_form(
            request,
            project,
            Draft(_add_module_row(request.POST), fixed_name=program.name),
            program=program,
        )
    draft = Draft(request.POST, request.FILES, fixed_name=program.name)
    if not draft.check():
        return _render_form(request, project, draft, program=program, status=400)
    new_spec = draft.spec.to_dict()
    latest_spec = _parse(latest.spec)[0] if latest else None
    if latest and latest_spec is not None and latest_spec.to_dict() == new_spec:
        messages.info(request, f"No changes: version {latest.version} already has this spec.")
        return redirect("jobs:program-detail", project.slug, program.pk)
    with transaction.atomic():
        Program.objects.select_for_update().filter(pk=program.pk).first()
        number = (program.versions.aggregate(n=Max("version"))["n"] or 0) + 1
        ProgramVersion.objects.create(
            program=program, version=number, spec=new_spec, created_by=request.user
        )
    messages.success(request, f"Saved version {number} of “{program.name}”.")
    return redirect("jobs:program-detail", project.slug, program.pk)


@login_required
@require_POST
def program_validate(request: HttpRequest, slug: str) -> HttpResponse:
    """Live validation (htmx, as you type): the parser's verdict on the posted form or spec."""
    project = get_project_for(request, slug, need="operate")
    fixed = request.POST.get("fixed_name") or None
    if fixed is not None and not project.programs.filter(name=fixed).exists():
        fixed = None
    draft = Draft(request.POST, request.FILES, fixed_name=fixed)
    draft.check()
    return render(
        request, "jobs/program_form.html#spec-check", {"project": project, "draft": draft}
    )


@login_required
@require_GET
def program_module_row(request: HttpRequest, slug: str) -> HttpResponse:
    """One more module form for the formset (htmx "add module"), plus the new TOTAL_FORMS out of band."""
    project = get_project_for(request, slug, need="operate")
    index = _total_forms(request.GET.get(f"{PREFIX}-TOTAL_FORMS"))
    form = ProgramModuleForm(
        prefix=f"{PREFIX}-{index}", initial={"type": "Predict"}, use_required_attribute=False
    )
    context = {
        "project": project,
        "form": form,
        "index": index,
        "total": index + 1,
        "prefix": PREFIX,
        "oob": True,
    }
    return render(request, "jobs/program_form.html#module-row", context)


@login_required
@require_GET
def program_detail(
    request: HttpRequest, slug: str, pk: int, version: int | None = None
) -> HttpResponse:
    project = get_project_for(request, slug)
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
    spec, key, message = _parse(shown.spec)
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
