"""A form's own fields, typed: ``form.fields`` holds plain ``Field``s to a type checker, so a form
that narrows a choice field's queryset or choices in ``__init__`` asks for it by its kind."""

from __future__ import annotations

from typing import TypeVar

from django import forms

FieldT = TypeVar("FieldT", bound=forms.Field)


def field_of(form: forms.BaseForm, name: str, kind: type[FieldT]) -> FieldT:
    """``form.fields[name]`` (the form's copy of the declared field), which must be a ``kind``."""
    field = form.fields[name]
    if not isinstance(field, kind):
        raise TypeError(f"{type(form).__name__}.{name} is a {type(field).__name__}, not a {kind}")
    return field
