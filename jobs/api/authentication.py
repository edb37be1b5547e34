"""How API requests say who they are: ``Authorization: Bearer <project API key>``.

A signed-in browser session works too (DRF's SessionAuthentication, listed after this class in
settings.REST_FRAMEWORK): it enforces CSRF on writes, which key requests never need.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from jobs.services import api_keys

KEYWORD = "Bearer"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """A project API key. The request acts as the key's creator, with the key's rights
    (``request.auth`` is the ApiKey; jobs/api/permissions.py keeps it inside its project)."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != KEYWORD.lower().encode():
            return None  # not ours: the session may still authenticate the request
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Send the key as 'Authorization: Bearer <key>', one key without spaces."
            )
        try:
            raw = header[1].decode()
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("The API key is not valid.") from None
        key = api_keys.authenticate(raw)
        if key is None:
            raise exceptions.AuthenticationFailed("The API key is not valid (unknown or revoked).")
        return key.created_by, key

    def authenticate_header(self, request: Request) -> str:
        """Makes a request without credentials a 401 (not a 403), asking for a key."""
        return f'{KEYWORD} realm="api"'


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes ApiKeyAuthentication."""

    target_class = ApiKeyAuthentication
    name = "projectApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A project API key (bft_...), made by an owner on the project's API "
            "keys page. It acts only in its project, read-only or read-write.",
        }
