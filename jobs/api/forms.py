"""The pages' forms, used by the API: each write endpoint's input is its form's fields.

A form holds the rules of what people type (jobs/forms/); the API does not restate them. For
each form, :func:`serializer_for_form` makes a DRF serializer with the same fields, types,
bounds, choices, defaults (the form's initial values) and help texts: it types and documents
the JSON input (the OpenAPI schema). :func:`validate_form` then binds the form to that typed
input and returns its cleaned data, or raises a 400 naming each field the form refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar, cast

from django import forms
from django.core.files.uploadedfile import UploadedFile
from django.utils.datastructures import MultiValueDict
from django.utils.html import strip_tags
from rest_framework import serializers

from jobs.api.errors import form_invalid

FormT = TypeVar("FormT", bound=forms.BaseForm)


def _common(field: forms.Field, *, default: Any = None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if field.help_text:
        kwargs["help_text"] = strip_tags(str(field.help_text))
    if field.label:
        kwargs["label"] = str(field.label)
    if default is not None:
        kwargs["default"] = default
    elif not field.required:
        kwargs.update(required=False, allow_null=True)  # null: the form's "empty"
    return kwargs


def api_field(field: forms.Field) -> serializers.Field:
    """The serializer field for one form field (the checks of the order matter: subclasses first)."""
    initial = field.initial
    if isinstance(field, forms.ModelChoiceField):
        kind = field.queryset.model._meta.verbose_name if field.queryset is not None else "object"
        kwargs = _common(field)
        kwargs.setdefault("help_text", f"The id of a {kind} of this project.")
        return serializers.IntegerField(min_value=1, **kwargs)
    if isinstance(field, forms.BooleanField):
        return serializers.BooleanField(**_common(field, default=bool(initial)))
    if isinstance(field, forms.ChoiceField):
        options = cast("Iterable[tuple[Any, Any]]", field.choices)
        choices = [(value, label) for value, label in options if value != ""]
        kwargs = _common(field, default=initial or None)
        return serializers.ChoiceField(choices=choices, allow_blank=not field.required, **kwargs)
    if isinstance(field, forms.FloatField):
        return serializers.FloatField(
            min_value=field.min_value, max_value=field.max_value, **_common(field, default=initial)
        )
    if isinstance(field, forms.IntegerField):
        return serializers.IntegerField(
            min_value=field.min_value, max_value=field.max_value, **_common(field, default=initial)
        )
    if isinstance(field, forms.FileField):
        return serializers.FileField(**_common(field))
    if isinstance(field, forms.CharField):
        kwargs = _common(field, default=initial or ("" if not field.required else None))
        return serializers.CharField(
            max_length=field.max_length,
            allow_blank=not field.required,
            trim_whitespace=False,
            **kwargs,
        )
    raise TypeError(f"no API field for {type(field).__name__}")


def serializer_for_form(
    name: str,
    form: forms.BaseForm,
    *,
    exclude: tuple[str, ...] = (),
    extra: dict[str, serializers.Field] | None = None,
    doc: str = "",
) -> type[serializers.Serializer]:
    """A serializer class named ``name`` with the fields of ``form`` (an instance, so fields set
    up in its ``__init__`` are there too), less ``exclude``, plus ``extra``."""
    attrs: dict[str, Any] = {
        field_name: api_field(field)
        for field_name, field in form.fields.items()
        if field_name not in exclude
    }
    attrs.update(extra or {})
    attrs["__doc__"] = doc or f"The fields of {type(form).__name__}."
    return type(name, (serializers.Serializer,), attrs)


def validate_form(form_class: type[FormT], data: dict[str, Any], **kwargs: Any) -> FormT:
    """``form_class`` bound to serializer-validated ``data`` (uploads go in as files); its cleaned
    data once valid, else a 400 naming the fields."""
    values = {k: v for k, v in data.items() if not isinstance(v, UploadedFile) and v is not None}
    files = MultiValueDict({k: [v] for k, v in data.items() if isinstance(v, UploadedFile)})
    form = form_class(values, files, **kwargs)
    if not form.is_valid():
        raise form_invalid(form)
    return form
