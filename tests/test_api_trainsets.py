"""/api/v1/projects/<slug>/trainsets/: upload with line-numbered errors, list, detail, rows."""

from __future__ import annotations

from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings

from jobs.models import Trainset
from tests.api_client import READ, WRITE_OK, ApiTestCase

URL = "/api/v1/projects/p1/trainsets/"
GOOD = b'{"text": "great", "sentiment": "positive"}\n{"text": "awful", "sentiment": "negative"}\n'


def upload(
    content: bytes = GOOD, name: str = "reviews.jsonl", **fields: object
) -> dict[str, object]:
    return {"file": SimpleUploadedFile(name, content), **fields}


class TrainsetApiTestCase(ApiTestCase):
    def test_it_uploads_a_file_and_shows_its_split(self) -> None:
        r = self.api("post", URL, upload(dev_ratio=0.5), multipart=True)
        self.assertEqual(r.status_code, 201, r.content)
        body = r.json()
        self.assertEqual((body["name"], body["status"], body["row_count"]), ("reviews", "ready", 2))
        self.assertEqual((body["train_count"], body["dev_count"]), (1, 1))
        self.assertEqual([f["name"] for f in body["fields"]], ["text", "sentiment"])
        trainset = Trainset.objects.get()
        self.assertEqual((trainset.project, trainset.created_by), (self.p1, self.alice))

    def test_upload_errors_name_the_line_and_column_and_import_nothing(self) -> None:
        bad = GOOD + b'{"text": {"nested": 1}, "sentiment": "x"}\n{not json}\n'
        r = self.api("post", URL, upload(bad), multipart=True)
        self.assertEqual(r.status_code, 400, r.content)
        body = r.json()
        self.assertEqual(body["code"], "invalid_file")
        self.assertEqual(body["error_count"], 2)
        self.assertEqual([e["line"] for e in body["errors"]], [3, 4])
        self.assertEqual({e["field"] for e in body["errors"]}, {"file"})
        self.assertEqual(body["errors"][0]["location"], "line 3")
        self.assertEqual(body["errors"][0]["column"], "text")
        self.assertFalse(Trainset.objects.exists())

    def test_csv_errors_name_the_row(self) -> None:
        content = b"text,sentiment\ngood,positive\nonly-one-column\n"
        r = self.api("post", URL, upload(content, "r.csv"), multipart=True)
        self.assertEqual(r.status_code, 400, r.content)
        self.assertEqual(r.json()["errors"][0]["location"], "row 2")
        self.assertEqual(r.json()["errors"][0]["line"], 2)

    def test_form_errors_name_the_field(self) -> None:
        r = self.api("post", URL, upload(name="reviews.txt", dev_ratio=0.95), multipart=True)
        self.assertEqual(r.status_code, 400, r.content)
        fields = {e["field"] for e in r.json()["errors"]}
        self.assertEqual(fields, {"dev_ratio"})
        r = self.api("post", URL, upload(name="reviews.txt"), multipart=True)
        self.assertEqual([e["field"] for e in r.json()["errors"]], ["file"])
        r = self.api("post", URL, {}, multipart=True)
        self.assertEqual([e["field"] for e in r.json()["errors"]], ["file"])

    @override_settings(BFT_UPLOAD_MAX_BYTES=1000)
    def test_a_body_over_the_limit_is_refused_unread(self) -> None:
        r = self.api("post", URL, upload(GOOD * 2000), multipart=True)
        self.assertEqual(r.status_code, 413)
        self.assertEqual(r.json()["code"], "too_large")

    def test_keys_and_roles(self) -> None:
        self.assert_keys("get", URL, READ)
        self.assert_keys(
            "post", URL, {**WRITE_OK, "rw": 201}, data=lambda: upload(), multipart=True
        )
        trainset = Trainset.objects.get()
        self.assert_keys("get", f"{URL}{trainset.pk}/", READ)
        self.assert_keys("get", f"{URL}{trainset.pk}/rows/", READ)
        other = Trainset.objects.create(project=self.p2, name="x", created_by=self.charlie)
        self.assertEqual(self.api("get", f"{URL}{other.pk}/").status_code, 404)
        self.assertEqual(
            self.api("get", f"/api/v1/projects/p2/trainsets/{other.pk}/").status_code, 404
        )

    def test_rows_page_with_a_cursor_and_filter_by_split(self) -> None:
        trainset = self.make_trainset(dev_every=4)
        r = self.api("get", f"{URL}{trainset.pk}/rows/", {"page_size": 3})
        body = r.json()
        self.assertEqual([row["index"] for row in body["results"]], [0, 1, 2])
        r = self.api("get", body["next"])
        self.assertEqual([row["index"] for row in r.json()["results"]], [3, 4, 5])
        r = self.api("get", f"{URL}{trainset.pk}/rows/", {"split": "dev"})
        self.assertEqual([row["index"] for row in r.json()["results"]], [3, 7])
        r = self.api("get", f"{URL}{trainset.pk}/rows/", {"split": "test"})
        self.assertEqual((r.status_code, r.json()["errors"][0]["field"]), (400, "split"))

    def test_a_list_pages_newest_first(self) -> None:
        for _ in range(3):
            self.make_trainset()
        r = self.api("get", URL, {"page_size": 2})
        body = r.json()
        self.assertEqual(len(body["results"]), 2)
        self.assertIsNotNone(body["next"])
        self.assertGreater(body["results"][0]["id"], body["results"][1]["id"])
