"""Request bodies over the size limit are refused before anything reads them: the trainset
upload (its own limit, its own page) and every other URL (BFT_REQUEST_MAX_BYTES)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from django.http import HttpResponseBase
from django.test import Client, override_settings

from jobs.models import Trainset
from jobs.services import trainsets
from tests.test_trainset_values import GOOD, URL, upload
from tests.web import WebTestCase

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


class UnreadBody(io.RawIOBase):
    """A request body that counts how much of it is read."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer)
        n = min(len(view), self.size - self.bytes_read)
        view[:n] = b"x" * n
        self.bytes_read += n
        return n


@override_settings(BFT_UPLOAD_MAX_BYTES=10_000)
class RequestSizeTestCase(WebTestCase):
    def post_declared(self, client: Client, size: int) -> tuple[HttpResponseBase, UnreadBody]:
        body = UnreadBody(size)
        environ: dict[str, Any] = {"wsgi.input": body}
        response = client.generic(
            "POST",
            URL,
            CONTENT_TYPE="multipart/form-data; boundary=bftweb",
            CONTENT_LENGTH=str(size),
            **environ,
        )
        return response, body

    def test_a_body_over_the_limit_is_refused_before_it_is_read(self) -> None:
        self.login(self.bob)
        r, body = self.post_declared(self.client, 50 * 1024 * 1024)
        self.assertContains(r, "It was refused before it was read", status_code=413)
        self.assertContains(r, "the limit is 9.8\xa0KB", status_code=413)
        self.assertEqual(body.bytes_read, 0)
        self.assertFalse(Trainset.objects.exists())

    def test_not_even_the_csrf_check_reads_it(self) -> None:
        client, _token = self.csrf_client(self.bob)
        r, body = self.post_declared(client, 50 * 1024 * 1024)
        self.assertEqual((r.status_code, body.bytes_read), (413, 0))

    def test_only_members_who_operate_get_that_far(self) -> None:
        self.login(self.victor)
        r, body = self.post_declared(self.client, 50 * 1024 * 1024)
        self.assertEqual((r.status_code, body.bytes_read), (403, 0))

    def test_every_other_url_refuses_a_body_over_the_request_limit_unread(self) -> None:
        """Program uploads, the API, the admin, even signed out: over BFT_REQUEST_MAX_BYTES is
        refused before anything (the CSRF check, a form, DRF's parser) reads the body."""
        self.login(self.bob)
        for url, shape in (
            ("/p/p1/programs/new/", "text/plain"),
            ("/api/v1/projects/p1/programs/", "application/json"),
            ("/admin/login/", "text/plain"),
        ):
            with self.subTest(url=url), override_settings(BFT_REQUEST_MAX_BYTES=1024 * 1024):
                body = UnreadBody(2 * 1024 * 1024)
                environ: dict[str, Any] = {"wsgi.input": body}
                r = self.client.generic(
                    "POST",
                    url,
                    CONTENT_TYPE="multipart/form-data; boundary=bftweb",
                    CONTENT_LENGTH=str(body.size),
                    **environ,
                )
                self.assertEqual((r.status_code, body.bytes_read), (413, 0))
                self.assertTrue(r["Content-Type"].startswith(shape))
                self.assertIn("BFT_REQUEST_MAX_BYTES", r.content.decode())

    def test_with_the_default_request_limit_the_upload_still_says_its_own_limit(self) -> None:
        """BFT_REQUEST_MAX_BYTES defaults to the upload limit plus the form's room: the upload's
        page and API, not the middleware, refuse a file over it, unread, in their own words."""
        default = 10_000 + trainsets.UPLOAD_FORM_OVERHEAD
        with override_settings(BFT_REQUEST_MAX_BYTES=default):
            self.login(self.bob)
            r, body = self.post_declared(self.client, 50 * 1024 * 1024)
            self.assertContains(r, "the limit is 9.8\xa0KB per file", status_code=413)
            self.assertContains(r, "nothing was imported", status_code=413)
            self.assertEqual(body.bytes_read, 0)
            api = UnreadBody(50 * 1024 * 1024)
            environ: dict[str, Any] = {"wsgi.input": api}
            r = self.client.generic(
                "POST",
                "/api/v1/projects/p1/trainsets/",
                CONTENT_TYPE="multipart/form-data; boundary=bftweb",
                CONTENT_LENGTH=str(api.size),
                **environ,
            )
            self.assertEqual(
                (r.status_code, r.json()["code"], api.bytes_read), (413, "too_large", 0)
            )
            self.assertIn("per file", r.json()["detail"])
            other = UnreadBody(50 * 1024 * 1024)  # any other URL: the middleware's refusal
            environ = {"wsgi.input": other}
            r = self.client.generic(
                "POST",
                "/p/p1/programs/new/",
                CONTENT_TYPE="multipart/form-data; boundary=bftweb",
                CONTENT_LENGTH=str(other.size),
                **environ,
            )
            self.assertEqual((r.status_code, other.bytes_read), (413, 0))
            self.assertIn("BFT_REQUEST_MAX_BYTES", r.content.decode())
        self.assertFalse(Trainset.objects.exists())

    def test_a_body_within_the_limit_is_read_and_checked_as_before(self) -> None:
        self.login(self.bob)
        r = self.client.post(URL, upload("t.jsonl", f"{GOOD}\n".encode() * 100))
        self.assertEqual(r.status_code, 302)  # 4.3 KB: imported
        r = self.client.post(URL, upload("t.jsonl", f"{GOOD}\n".encode() * 300))
        self.assertContains(r, "the limit is 9.8\xa0KB", status_code=400)  # 13 KB: the form says so
