"""Throttling per API key (and per signed-in user for session requests).

Rates are settings (BFT_API_KEY_RATE, BFT_API_USER_RATE, e.g. "600/min"); counts live in
Django's cache, so with the default per-process cache each web process counts on its own.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from jobs.models import ApiKey

RATE_SETTINGS = {"api_key": "BFT_API_KEY_RATE", "api_user": "BFT_API_USER_RATE"}


class KeyRateThrottle(SimpleRateThrottle):
    """One budget per key; a session request uses its user's budget."""

    scope = "api_key"

    def get_rate(self) -> str | None:
        rate: str | None = getattr(settings, RATE_SETTINGS[self.scope], None) or None
        return rate

    def allow_request(self, request: Request, view: Any) -> bool:
        # The scope (and so the rate) depends on how the request authenticated.
        self.scope = "api_key" if isinstance(request.auth, ApiKey) else "api_user"
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return bool(super().allow_request(request, view))

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if isinstance(request.auth, ApiKey):
            ident = f"key-{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            return None  # refused anyway (401)
        return self.cache_format % {"scope": self.scope, "ident": ident}
