"""Request-wide guards that run before anything reads a request."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.defaultfilters import filesizeformat
from django.urls import Resolver404, resolve

from jobs.http import CHECKS_BODY_SIZE, declared_body_length


class RequestSizeLimitMiddleware:
    """Refuse, unread, any request whose declared body is over ``BFT_REQUEST_MAX_BYTES`` (413).

    Django reads at most CONTENT_LENGTH bytes of a body, so checking the header first means an
    oversized body is never read, by the CSRF check or a form. The limit is the trainset upload
    limit plus room for the form around it: the largest body any page or API call needs.

    A view marked with ``jobs.http.checks_body_size`` (the trainset upload, its page and its API)
    refuses a body over its own limit itself, unread, after checking who is asking and with a
    message of its own (jobs/services/trainsets.request_too_large): its requests are left to it.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        length = declared_body_length(request.META)
        limit = int(settings.BFT_REQUEST_MAX_BYTES)
        if length <= limit or view_checks_body_size(request.path_info):
            return self.get_response(request)
        message = (
            f"The request body is {filesizeformat(length)}; the limit is "
            f"{filesizeformat(limit)} (BFT_REQUEST_MAX_BYTES). It was refused before it was read."
        )
        if request.path.startswith("/api/"):
            return JsonResponse({"detail": message, "code": "request_too_large"}, status=413)
        return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")


def view_checks_body_size(path: str) -> bool:
    """Whether the view at ``path`` (a function, or a DRF viewset's view) checks the body's size."""
    try:
        view = resolve(path).func
    except Resolver404:
        return False
    return bool(
        getattr(view, CHECKS_BODY_SIZE, False)
        or getattr(getattr(view, "cls", None), CHECKS_BODY_SIZE, False)
    )
