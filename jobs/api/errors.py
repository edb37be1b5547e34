"""Every API error is JSON: ``{"detail": ..., "code": ..., "errors": [...]}``.

``errors`` lists what the request got wrong, each naming where: ``{"field": "metric_field",
"message": ..., "code": ...}`` for a field (a dotted path inside nested input, None for the whole
request), or, for an uploaded file, ``{"field": "file", "location": "line 3", "line": 3,
"column": "text", "message": ...}``. Other errors (401, 403, 404, 409, 429, ...) have no ``errors``.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

NON_FIELD_KEYS = ("non_field_errors", "__all__")


class ApiError(exceptions.APIException):
    """An error whose JSON body is given whole (e.g. an upload's row errors)."""

    def __init__(self, body: dict[str, Any], status_code: int = status.HTTP_400_BAD_REQUEST):
        super().__init__(body.get("detail", ""))
        self.status_code = status_code
        self.body = body


class Conflict(exceptions.APIException):
    """The object's state refuses the action (cancel a finished run, retry a running one)."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


def field_errors(detail: Any, field: str | None = None) -> list[dict[str, Any]]:
    """A ValidationError's detail (nested dicts and lists) as a flat list naming each field."""
    if isinstance(detail, dict):
        out: list[dict[str, Any]] = []
        for key, value in detail.items():
            if isinstance(key, int):  # an item of a list
                out += field_errors(value, f"{field or ''}[{key}]")
                continue
            name = None if key in NON_FIELD_KEYS else str(key)
            out += field_errors(value, f"{field}.{name}" if field and name else (name or field))
        return out
    if isinstance(detail, list):
        out = []
        for index, item in enumerate(detail):
            if isinstance(item, (dict, list)):
                out += field_errors(item, f"{field}[{index}]" if field else f"[{index}]")
            else:
                out += field_errors(item, field)
        return out
    return [{"field": field, "message": str(detail), "code": getattr(detail, "code", "invalid")}]


def validation_body(errors: list[dict[str, Any]]) -> dict[str, Any]:
    code = "invalid"
    if len(errors) == 1:
        first = errors[0]
        detail = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
        code = first.get("code") or code
    else:
        detail = f"The request has {len(errors)} problems."
    return {"detail": detail, "code": code, "errors": errors}


def invalid(field: str | None, message: str, code: str = "invalid") -> ApiError:
    """A 400 about one field (None: the request as a whole)."""
    return ApiError(validation_body([{"field": field, "message": message, "code": code}]))


def form_invalid(form: forms.BaseForm) -> ApiError:
    """A bound, invalid form's errors as a 400, each naming its field."""
    errors = [
        {"field": None if name == NON_FIELD_ERRORS else name, **item}
        for name, items in form.errors.get_json_data().items()
        for item in items
    ]
    return ApiError(validation_body(errors))


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a server error: Django's 500 handling (and logging)
    if isinstance(exc, ApiError):
        response.data = exc.body
    elif isinstance(exc, exceptions.ValidationError):
        response.data = validation_body(field_errors(exc.detail))
    else:
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else ""
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        response.data = {"detail": str(detail), "code": code}
    return response


class ErrorItemSerializer(serializers.Serializer):
    """One problem, naming its field (or, for an upload, its line or row)."""

    field = serializers.CharField(allow_null=True)
    message = serializers.CharField()
    code = serializers.CharField(required=False)
    location = serializers.CharField(
        required=False, help_text='Uploads: "line 3", "row 3", "header" or "file".'
    )
    line = serializers.IntegerField(required=False, allow_null=True)
    column = serializers.CharField(required=False, allow_blank=True)


class ErrorSerializer(serializers.Serializer):
    """Every error response's body."""

    detail = serializers.CharField()
    code = serializers.CharField()
    errors = ErrorItemSerializer(many=True, required=False)
