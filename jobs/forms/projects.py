"""Forms for projects and their members."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.text import slugify

from jobs.models import Membership, Project
from jobs.services.projects import users_visible_to

ROLE_CHOICES = Membership.Role.choices


class ProjectForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="A team workspace, e.g. “Support bot”.")

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        slug = slugify(name)
        if not slug:
            raise forms.ValidationError("Use at least one letter or digit.")
        if (
            Project.objects.filter(name__iexact=name).exists()
            or Project.objects.filter(slug=slug).exists()
        ):
            raise forms.ValidationError("A project with this name already exists.")
        self.cleaned_data["slug"] = slug
        return name


class MemberAddForm(forms.Form):
    """Adds someone the adding user may know exists (see ``users_visible_to``). Anyone else gets
    the same answer as a name that does not exist, so the form cannot be used to probe names."""

    username = forms.CharField(
        max_length=150,
        help_text="The bftweb username of someone who shares a project with you. "
        "An administrator adds anyone else.",
    )
    role = forms.ChoiceField(choices=ROLE_CHOICES, initial=Membership.Role.VIEWER)

    def __init__(self, *args: Any, project: Project, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.project = project
        self.user = user

    def clean_username(self) -> Any:
        username = self.cleaned_data["username"].strip()
        user = users_visible_to(self.user).filter(username=username).first()
        if user is None:
            raise forms.ValidationError(
                f"No user named “{username}” that you can add: you can add people who share "
                "a project with you; an administrator adds anyone else."
            )
        if Membership.objects.filter(project=self.project, user=user).exists():
            raise forms.ValidationError(f"{username} is already a member.")
        return user


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=ROLE_CHOICES)
