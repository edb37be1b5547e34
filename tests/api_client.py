"""What the API tests share (tests/test_api_*.py): keys for the fixed cast and a JSON client.

p1 gets a read-write key and a read-only key (made by alice, its owner); p2 a read-write key
(charlie's). ``api()`` sends JSON (or multipart with ``files``) with a key, or with no credentials
(``key=None``), or as the client's session (``key="session"``).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.cache import cache
from django.test import Client

from jobs.services import api_keys
from tests.base import BaseTestCase


class ApiTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        cache.clear()  # the throttles' counts (keys' ids repeat from test to test)
        _, self.rw = api_keys.create_api_key(
            project=self.p1, user=self.alice, name="ci", scope="read_write"
        )
        _, self.ro = api_keys.create_api_key(
            project=self.p1, user=self.alice, name="dashboards", scope="read"
        )
        _, self.other = api_keys.create_api_key(
            project=self.p2, user=self.charlie, name="theirs", scope="read_write"
        )

    def api(
        self,
        method: str,
        url: str,
        data: Any = None,
        *,
        key: str | None = "rw",
        client: Client | None = None,
        multipart: bool = False,
        headers: dict[str, str] | None = None,
    ) -> Any:
        client = client or Client()
        headers = dict(headers or {})
        if key is not None and key != "session":
            raw = {"rw": self.rw, "ro": self.ro, "other": self.other}.get(key, key)
            headers["Authorization"] = f"Bearer {raw}"
        call = getattr(client, method)
        if method == "get":
            return call(url, data or {}, headers=headers)
        if multipart:
            return call(url, data or {}, headers=headers)
        body = json.dumps(data if data is not None else {})
        return call(url, body, content_type="application/json", headers=headers)

    def assert_keys(
        self, method: str, url: str, expected: dict[str, int], data: Any = None, **kw: Any
    ) -> None:
        """expected: "none" (no credentials), "other" (p2's key), "ro", "rw" -> status; asked in
        that order, so a write by the read-write key comes last."""
        order = [k for k in ("none", "other", "ro", "rw") if k in expected]
        got = {}
        for name in order:
            payload = data() if callable(data) else data
            key = None if name == "none" else name
            got[name] = self.api(method, url, payload, key=key, **kw).status_code
        self.assertEqual(got, expected, f"{method.upper()} {url}")


READ = {"none": 401, "other": 404, "ro": 200, "rw": 200}
WRITE_OK = {"none": 401, "other": 404, "ro": 403}
