from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import admin
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, include, path
from django_rq.urls import get_admin_urlpatterns, get_api_urlpatterns

View = Callable[..., HttpResponse]


def superuser_required(view: View) -> View:
    """django-rq's pages list every project's jobs (arguments, errors, results), so a staff user
    who is not a superuser gets a 403; django-rq's own staff check still sends everyone else who
    is not staff to the admin login page."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.user.is_staff and not request.user.is_superuser:
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapped


def session_only_for_superusers(view: View) -> View:
    """django-rq's stats JSON and metrics let any staff session in; here only a superuser's does.
    Anyone else is treated as signed out, so the RQ_API_TOKEN bearer token still works."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_superuser:
            request.user = AnonymousUser()
        return view(request, *args, **kwargs)

    return wrapped


def rq_urlpatterns() -> list[URLPattern]:
    api = [
        URLPattern(p.pattern, session_only_for_superusers(p.callback), p.default_args, p.name)
        for p in get_api_urlpatterns()
    ]
    return api + get_admin_urlpatterns(view_wrapper=superuser_required)


urlpatterns = [
    # django-rq's queue and worker pages: superusers only (see superuser_required).
    path("admin/rq/", include((rq_urlpatterns(), "django_rq"))),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/v1/", include("jobs.api.urls")),  # the JSON API (jobs/api/)
    path("", include("jobs.urls")),
]
