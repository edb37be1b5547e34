"""The request the app's views see, typed: what the middleware and ``get_project_for`` add."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
