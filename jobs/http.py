"""The request the app's views see, typed: what the middleware and ``get_project_for`` add; the
length a request declares for its body, and the mark of a view that checks that length itself."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from django.contrib.auth.models import User
from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails

if TYPE_CHECKING:
    from jobs.permissions import ProjectAccess


class BftRequest(HttpRequest):
    """A request to one of the app's views or admin actions, all of which need a signed-in user.
    For type checking only: Django still passes a plain HttpRequest, carrying these attributes."""

    htmx: HtmxDetails  # django_htmx's HtmxMiddleware
    user: User  # login_required (the admin: its staff check)
    project_access: ProjectAccess  # set by jobs.permissions.get_project_for


def declared_body_length(meta: Mapping[str, Any]) -> int:
    """The body length a request declares (CONTENT_LENGTH), 0 when none or unreadable: Django
    reads at most that many bytes, and nothing of a body whose length it cannot parse."""
    try:
        return int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


ViewT = TypeVar("ViewT", bound=Callable[..., Any])
CHECKS_BODY_SIZE = "checks_body_size"


def checks_body_size(view: ViewT) -> ViewT:
    """Mark a view (or a DRF view class) that refuses an oversized body itself, before reading
    any of it and with a message of its own: the request-size middleware
    (bftweb/middleware.py) leaves such requests to it."""
    setattr(view, CHECKS_BODY_SIZE, True)
    return view
