"""A form's own fields, typed: ``form.fields`` holds plain ``Field``s to a type checker, so a form
that narrows a choice field's queryset or choices in ``__init__`` asks for it by its kind."""

from __future__ import annotations

from typing import TypeVar

from django import forms
from django.db.models import QuerySet

from jobs.models import ProgramVersion, Project

FieldT = TypeVar("FieldT", bound=forms.Field)


def field_of(form: forms.BaseForm, name: str, kind: type[FieldT]) -> FieldT:
    """``form.fields[name]`` (the form's copy of the declared field), which must be a ``kind``."""
    field = form.fields[name]
    if not isinstance(field, kind):
        raise TypeError(f"{type(form).__name__}.{name} is a {type(field).__name__}, not a {kind}")
    return field


def offer_program_versions(form: forms.BaseForm, project: Project) -> QuerySet[ProgramVersion]:
    """The form's ``program_version`` offers the project's versions, by program, newest first;
    returns them."""
    versions = ProgramVersion.objects.filter(program__project=project).select_related("program")
    versions = versions.order_by("program__name", "-version")
    field_of(form, "program_version", forms.ModelChoiceField).queryset = versions
    return versions
