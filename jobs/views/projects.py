"""Home (the user's projects), a project's overview, and its members."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from jobs.forms.projects import MemberAddForm, MemberRoleForm, ProjectForm
from jobs.http import BftRequest
from jobs.models import Membership, Project
from jobs.permissions import get_project_for
from jobs.services import projects


@login_required
@require_http_methods(["GET", "POST"])
def home(request: BftRequest) -> HttpResponse:
    """The user's projects, and a form to start a new one (its creator becomes the owner)."""
    form = ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        project = projects.create_project(
            name=form.cleaned_data["name"], slug=form.cleaned_data["slug"], owner=request.user
        )
        messages.success(request, f"Project “{project.name}” created. You are its owner.")
        return redirect("jobs:project-detail", project.slug)
    memberships = (
        Membership.objects.filter(user=request.user)
        .select_related("project")
        .order_by("project__name")
    )
    return render(request, "jobs/home.html", {"memberships": memberships, "form": form})


@login_required
@require_GET
def project_detail(request: BftRequest, slug: str) -> HttpResponse:
    project = get_project_for(request, slug).project
    counts = {
        "models": project.models.count(),
        "trainsets": project.trainsets.count(),
        "programs": project.programs.count(),
        "runs": project.runs.count(),
        "jobs": project.finetune_jobs.count(),
        "members": project.memberships.count(),
    }
    context = {
        "project": project,
        "nav": "overview",
        "counts": counts,
        "runs": project.runs.select_related("trainset", "program_version__program", "teacher")[:5],
        "jobs": project.finetune_jobs.select_related("student")[:5],
    }
    return render(request, "jobs/project_detail.html", context)


@login_required
@require_GET
def member_list(request: BftRequest, slug: str) -> HttpResponse:
    project = get_project_for(request, slug).project
    return _render_members(request, project, MemberAddForm(project=project, user=request.user))


def _render_members(
    request: BftRequest, project: Project, form: MemberAddForm, status: int = 200
) -> HttpResponse:
    memberships = project.memberships.select_related("user").order_by("user__username")
    context = {
        "project": project,
        "nav": "members",
        "memberships": memberships,
        "form": form,
        "role_choices": Membership.Role.choices,
    }
    return render(request, "jobs/member_list.html", context, status=status)


@login_required
@require_POST
def member_add(request: BftRequest, slug: str) -> HttpResponse:
    project = get_project_for(request, slug, need="own").project
    form = MemberAddForm(request.POST, project=project, user=request.user)
    if not form.is_valid():
        return _render_members(request, project, form, status=400)
    user = form.cleaned_data["username"]
    projects.add_member(project=project, user=user, role=form.cleaned_data["role"])
    messages.success(request, f"{user.get_username()} added as {form.cleaned_data['role']}.")
    return redirect("jobs:member-list", project.slug)


@login_required
@require_POST
def member_role(request: BftRequest, slug: str, pk: int) -> HttpResponse:
    project = get_project_for(request, slug, need="own").project
    membership = get_object_or_404(Membership, pk=pk, project=project)
    form = MemberRoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a valid role.")
        return redirect("jobs:member-list", project.slug)
    try:
        projects.change_role(membership=membership, role=form.cleaned_data["role"], by=request.user)
    except projects.LastOwnerError as e:
        messages.error(request, str(e))
    else:
        messages.success(request, f"{membership.user.get_username()} is now {membership.role}.")
    return redirect("jobs:member-list", project.slug)


@login_required
@require_POST
def member_remove(request: BftRequest, slug: str, pk: int) -> HttpResponse:
    project = get_project_for(request, slug, need="own").project
    membership = get_object_or_404(
        Membership.objects.select_related("user"), pk=pk, project=project
    )
    try:
        projects.remove_member(membership=membership, by=request.user)
    except projects.LastOwnerError as e:
        messages.error(request, str(e))
        return redirect("jobs:member-list", project.slug)
    messages.success(request, f"{membership.user.get_username()} removed from {project.name}.")
    if membership.user_id == request.user.pk:
        return redirect("jobs:home")
    return redirect("jobs:member-list", project.slug)
