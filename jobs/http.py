"""The request the app's views see, typed: what the middleware and ``get_project_for`` add; and
the length a request declares for its body."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

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
