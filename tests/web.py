"""Helpers shared by the page tests (tests/test_<screen>.py): the role matrix and CSRF clients."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponseBase, StreamingHttpResponse
from django.test import Client

from tests.base import BaseTestCase


def streamed(response: HttpResponseBase) -> bytes:
    """The body of a streamed response (a download or an export)."""
    assert isinstance(response, StreamingHttpResponse), type(response)
    return response.getvalue()


class WebTestCase(BaseTestCase):
    def login(self, user: Any) -> None:
        self.client.force_login(user)

    def status_for(
        self, user: Any, method: str, url: str, data: dict[str, Any] | None = None, **kwargs: Any
    ) -> int:
        client = Client()
        if user is not None:
            client.force_login(user)
        response = getattr(client, method)(url, data or {}, **kwargs)
        return response.status_code

    def assert_roles(
        self,
        method: str,
        url: str,
        expected: dict[str, int],
        data: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        """expected: role name -> status, for alice (owner), bob (operator), rita (reviewer),
        victor (viewer) and charlie (outsider)."""
        users = {
            "owner": self.alice,
            "operator": self.bob,
            "reviewer": self.rita,
            "viewer": self.victor,
            "outsider": self.charlie,
        }
        got = {role: self.status_for(users[role], method, url, data, **kw) for role in expected}
        self.assertEqual(got, expected, f"{method.upper()} {url}")

    def csrf_client(self, user: Any) -> tuple[Client, str]:
        """A client that enforces CSRF, logged in, and the token a page gave it."""
        client = Client(enforce_csrf_checks=True)
        client.force_login(user)
        client.get("/")  # sets the csrftoken cookie
        return client, client.cookies["csrftoken"].value


READ_ALL = {"owner": 200, "operator": 200, "reviewer": 200, "viewer": 200, "outsider": 404}
OPERATE = {"owner": 200, "operator": 200, "reviewer": 403, "viewer": 403, "outsider": 404}
