from __future__ import annotations

import json
from collections.abc import Sequence
from unittest import mock

from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from jobs.models import Trainset, TrainsetRow
from jobs.services import trainsets
from tests.base import DEMO_DIR
from tests.web import OPERATE, READ_ALL, WebTestCase

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def jsonl(rows: Sequence[object]) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def upload(filename: str, content: bytes, **fields: object) -> dict[str, object]:
    return {
        "file": SimpleUploadedFile(filename, content),
        "dev_ratio": "0.25",
        "split_seed": "7",
        **fields,
    }


GOOD = [
    {"text": f"review {i}", "sentiment": "positive" if i % 2 else "negative"} for i in range(10)
]


class TrainsetUploadTestCase(WebTestCase):
    def test_the_form_shows_the_size_limit_before_upload(self) -> None:
        self.login(self.bob)
        with override_settings(BFT_UPLOAD_MAX_BYTES=3 * 1024 * 1024):
            r = self.client.get("/p/p1/trainsets/upload/")
        self.assertContains(r, "3.0\xa0MB")
        self.assertContains(r, 'enctype="multipart/form-data"')

    def test_only_operators_upload(self) -> None:
        self.assert_roles("get", "/p/p1/trainsets/upload/", OPERATE)
        for user in (self.rita, self.victor):
            self.client.force_login(user)
            r = self.client.post("/p/p1/trainsets/upload/", upload("t.jsonl", jsonl(GOOD)))
            self.assertEqual(r.status_code, 403)
        self.client.force_login(self.charlie)
        self.assertEqual(
            self.client.post("/p/p1/trainsets/upload/", upload("t.jsonl", jsonl(GOOD))).status_code,
            404,
        )
        self.assertFalse(Trainset.objects.exists())

    def test_it_imports_a_jsonl_file_with_fields_and_a_seeded_split(self) -> None:
        self.login(self.bob)
        r = self.client.post(
            "/p/p1/trainsets/upload/", upload("reviews.jsonl", jsonl(GOOD), name="Reviews")
        )
        trainset = Trainset.objects.get()
        self.assertRedirects(r, f"/p/p1/trainsets/{trainset.pk}/")
        self.assertEqual(
            (trainset.name, trainset.status, trainset.row_count, trainset.fmt),
            ("Reviews", "ready", 10, "jsonl"),
        )
        self.assertEqual(trainset.field_names, ["text", "sentiment"])
        self.assertEqual(trainset.rows.count(), 10)
        self.assertEqual(
            list(trainset.rows.order_by("index").values_list("index", flat=True)), list(range(10))
        )
        dev = set(trainset.rows.filter(split="dev").values_list("index", flat=True))
        # round(10 * 0.25) rounded by the engine, either way reproducible
        self.assertEqual(len(dev), 2)
        trainset.resplit(0.25, 7)
        self.assertEqual(
            set(trainset.rows.filter(split="dev").values_list("index", flat=True)), dev
        )

    def test_it_imports_the_demo_trainset(self) -> None:
        self.login(self.alice)
        content = (DEMO_DIR / "sentiment.jsonl").read_bytes()
        self.client.post("/p/p1/trainsets/upload/", upload("sentiment.jsonl", content))
        self.assertEqual(Trainset.objects.get().row_count, len(content.splitlines()))

    def test_it_imports_csv_with_a_bom(self) -> None:
        self.login(self.bob)
        content = '\ufefftext,sentiment\r\ngood,positive\r\n"bad, really",negative\r\n'.encode()
        self.client.post("/p/p1/trainsets/upload/", upload("t.csv", content))
        trainset = Trainset.objects.get()
        self.assertEqual(
            (trainset.fmt, trainset.row_count, trainset.field_names),
            ("csv", 2, ["text", "sentiment"]),
        )
        self.assertEqual(
            trainset.rows.get(index=1).data, {"text": "bad, really", "sentiment": "negative"}
        )

    def test_errors_are_listed_by_line_and_column_and_nothing_is_imported(self) -> None:
        self.login(self.bob)
        rows: list[object] = [
            *GOOD[:2],
            "{not json",
            GOOD[2],
            {"text": {"nested": 1}, "sentiment": "x"},
        ]
        r = self.client.post("/p/p1/trainsets/upload/", upload("t.jsonl", jsonl(rows)))
        self.assertEqual(r.status_code, 400)
        self.assertContains(r, "Nothing was imported", status_code=400)
        self.assertContains(r, "line 3", status_code=400)
        self.assertContains(r, "line 5", status_code=400)
        self.assertContains(r, "text", status_code=400)  # the column of the nested value
        self.assertFalse(Trainset.objects.exists())
        self.assertFalse(TrainsetRow.objects.exists())

    def test_csv_errors_name_the_row(self) -> None:
        self.login(self.bob)
        content = b"text,sentiment\ngood,positive\nonly-one-column\n"
        r = self.client.post("/p/p1/trainsets/upload/", upload("t.csv", content))
        self.assertContains(r, "row 2", status_code=400)
        self.assertFalse(Trainset.objects.exists())

    def test_it_lists_the_first_50_errors_then_a_count(self) -> None:
        self.login(self.bob)
        r = self.client.post("/p/p1/trainsets/upload/", upload("t.jsonl", jsonl(["[1]"] * 73)))
        self.assertContains(r, "73 problems", status_code=400)
        self.assertContains(r, "line 50<", status_code=400)
        self.assertNotContains(r, "line 51<", status_code=400)
        self.assertContains(r, "and 23 more", status_code=400)

    def test_skip_bad_rows_imports_only_the_valid_ones(self) -> None:
        self.login(self.bob)
        rows: list[object] = [GOOD[0], "{bad", GOOD[1]]
        r = self.client.post(
            "/p/p1/trainsets/upload/", upload("t.jsonl", jsonl(rows), skip_bad_rows="on")
        )
        trainset = Trainset.objects.get()
        self.assertRedirects(r, f"/p/p1/trainsets/{trainset.pk}/", fetch_redirect_response=False)
        self.assertEqual(trainset.row_count, 2)
        self.assertEqual([row.data for row in trainset.rows.order_by("index")], GOOD[:2])
        self.assertIn("line 2", trainset.error)
        self.assertContains(self.client.get(r["Location"]), "Skipped 1 bad row")

    @override_settings(BFT_UPLOAD_MAX_ROWS=3)
    def test_a_file_level_error_imports_nothing_even_when_skipping(self) -> None:
        self.login(self.bob)
        r = self.client.post(
            "/p/p1/trainsets/upload/", upload("t.jsonl", jsonl(GOOD), skip_bad_rows="on")
        )
        self.assertContains(r, "more than 3 rows", status_code=400)
        self.assertFalse(Trainset.objects.exists())

    @override_settings(BFT_UPLOAD_MAX_BYTES=100)
    def test_a_file_over_the_size_limit_is_refused(self) -> None:
        self.login(self.bob)
        r = self.client.post("/p/p1/trainsets/upload/", upload("t.jsonl", jsonl(GOOD)))
        self.assertContains(r, "the limit is 100\xa0bytes", status_code=400)
        self.assertFalse(Trainset.objects.exists())

    def test_other_file_types_are_refused(self) -> None:
        self.login(self.bob)
        r = self.client.post("/p/p1/trainsets/upload/", upload("t.xlsx", b"PK"))
        self.assertContains(r, "unsupported file type", status_code=400)

    def test_a_failure_part_way_through_the_import_leaves_nothing_behind(self) -> None:
        self.login(self.bob)
        rows = [{"text": f"r{i}", "sentiment": "positive"} for i in range(2500)]
        real = TrainsetRow.objects.bulk_create
        calls = []

        def flaky(batch, *args, **kwargs):
            calls.append(len(batch))
            if len(calls) == 2:
                raise RuntimeError("disk full")
            return real(batch, *args, **kwargs)

        with (
            mock.patch.object(TrainsetRow.objects, "bulk_create", side_effect=flaky),
            self.assertRaises(RuntimeError),
        ):
            self.client.post("/p/p1/trainsets/upload/", upload("t.jsonl", jsonl(rows)))
        self.assertEqual(calls, [trainsets.BATCH_SIZE, trainsets.BATCH_SIZE])
        self.assertFalse(Trainset.objects.exists())
        self.assertFalse(TrainsetRow.objects.exists())

    def test_upload_needs_the_csrf_token(self) -> None:
        client, token = self.csrf_client(self.bob)
        self.assertEqual(
            client.post("/p/p1/trainsets/upload/", upload("t.jsonl", jsonl(GOOD))).status_code, 403
        )
        r = client.post(
            "/p/p1/trainsets/upload/",
            {**upload("t.jsonl", jsonl(GOOD)), "csrfmiddlewaretoken": token},
        )
        self.assertEqual(r.status_code, 302)


class TrainsetDetailTestCase(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.client.force_login(self.bob)
        rows = [{"text": f"review {i}", "sentiment": "positive", "note": ""} for i in range(60)]
        rows[0] = {"text": XSS, "sentiment": "negative", "note": "filled"}
        self.client.post("/p/p1/trainsets/upload/", upload("t.jsonl", jsonl(rows)))
        self.trainset = Trainset.objects.get()
        self.url = f"/p/p1/trainsets/{self.trainset.pk}/"

    def test_every_member_sees_it_and_outsiders_get_404(self) -> None:
        self.assert_roles("get", self.url, READ_ALL)
        self.assert_roles("get", "/p/p1/trainsets/", READ_ALL)
        self.assertEqual(
            self.status_for(self.charlie, "get", f"/p/p2/trainsets/{self.trainset.pk}/"), 404
        )

    def test_an_xss_payload_in_a_field_renders_as_text(self) -> None:
        r = self.client.get(self.url)
        self.assertContains(
            r, "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"
        )
        self.assertNotContains(r, "<script>alert")
        self.assertNotContains(r, "<img src=x")

    def test_it_shows_fields_with_types_and_fill_rates(self) -> None:
        r = self.client.get(self.url)
        self.assertContains(r, "<code>note</code>", html=False)
        self.assertContains(r, "2%")  # note is filled in 1 of 60 rows
        self.assertContains(r, "100%")

    def test_the_preview_is_paginated(self) -> None:
        r = self.client.get(self.url)
        self.assertContains(r, "Page 1 of 3")
        self.assertContains(r, "review 24")
        self.assertNotContains(r, "review 25<")
        r = self.client.get(self.url, {"page": 3})
        self.assertContains(r, "review 59")
        self.assertContains(r, "Page 3 of 3")

    def test_operators_resplit_in_place(self) -> None:
        split_url = f"{self.url}split/"
        self.assert_roles(
            "post",
            split_url,
            {"reviewer": 403, "viewer": 403, "outsider": 404},
            {"dev_ratio": "0.5", "split_seed": "1"},
        )
        r = self.client.post(split_url, {"dev_ratio": "0.5", "split_seed": "3"})
        self.assertRedirects(r, self.url)
        self.trainset.refresh_from_db()
        self.assertEqual((self.trainset.dev_ratio, self.trainset.split_seed), (0.5, 3))
        self.assertEqual(self.trainset.rows.filter(split="dev").count(), 30)
        self.assertEqual(self.trainset.rows.count(), 60)

    def test_a_bad_split_is_refused(self) -> None:
        r = self.client.post(
            f"{self.url}split/", {"dev_ratio": "1.5", "split_seed": "3"}, follow=True
        )
        self.assertContains(r, "dev_ratio")
        self.trainset.refresh_from_db()
        self.assertEqual(self.trainset.dev_ratio, 0.25)

    def test_split_needs_the_csrf_token(self) -> None:
        client, _token = self.csrf_client(self.bob)
        self.assertEqual(
            client.post(f"{self.url}split/", {"dev_ratio": "0.5", "split_seed": "3"}).status_code,
            403,
        )


@override_settings(BFT_TRAINSET_ASYNC_ROWS=20)
class TrainsetBackgroundImportTestCase(WebTestCase):
    """Large uploads (≥ BFT_TRAINSET_ASYNC_ROWS rows) are imported by a worker, with progress."""

    def post(self, rows: Sequence[object], **fields: object):
        self.client.force_login(self.bob)
        with self.captureOnCommitCallbacks(execute=True):
            return self.client.post(
                "/p/p1/trainsets/upload/", upload("big.jsonl", jsonl(rows), **fields)
            )

    def work(self) -> None:
        queue = Queue("default", connection=self.redis, serializer=JSONSerializer)
        SimpleWorker([queue], connection=self.redis, serializer=JSONSerializer).work(burst=True)

    def test_it_queues_the_import_and_the_worker_finishes_it(self) -> None:
        rows = [{"text": f"r{i}", "sentiment": "positive"} for i in range(30)]
        r = self.post(rows)
        trainset = Trainset.objects.get()
        self.assertRedirects(r, f"/p/p1/trainsets/{trainset.pk}/", fetch_redirect_response=False)
        self.assertEqual(trainset.status, "importing")
        queue = Queue("default", connection=self.redis)
        self.assertEqual(queue.job_ids, [str(trainset.background_import.rq_job_id)])
        page = self.client.get(r["Location"])
        self.assertContains(page, "Importing in the background")
        self.assertContains(page, f"/p/p1/trainsets/{trainset.pk}/status/")
        self.work()
        trainset.refresh_from_db()
        self.assertEqual(
            (trainset.status, trainset.row_count, trainset.rows.count()), ("ready", 30, 30)
        )
        self.assertEqual(trainset.field_names, ["text", "sentiment"])
        self.assertEqual(list((self.artifacts / "uploads").iterdir()), [])
        status = self.client.get(
            f"/p/p1/trainsets/{trainset.pk}/status/", headers={"HX-Request": "true"}
        )
        self.assertEqual(status["HX-Refresh"], "true")
        self.assertNotContains(status, "hx-trigger")

    def test_a_bad_large_file_fails_with_the_errors_and_imports_nothing(self) -> None:
        rows: list[object] = [{"text": f"r{i}", "sentiment": "positive"} for i in range(30)]
        rows[4] = "{broken"
        self.post(rows)
        self.work()
        trainset = Trainset.objects.get()
        self.assertEqual(trainset.status, "failed")
        self.assertIn("line 5", trainset.error)
        self.assertFalse(trainset.rows.exists())
        r = self.client.get(f"/p/p1/trainsets/{trainset.pk}/")
        self.assertContains(r, "nothing was imported")

    def test_progress_is_read_from_the_rq_job(self) -> None:
        rows = [{"text": f"r{i}", "sentiment": "positive"} for i in range(30)]
        self.post(rows)
        trainset = Trainset.objects.get()
        queue = Queue("default", connection=self.redis, serializer=JSONSerializer)
        job = queue.fetch_job(str(trainset.background_import.rq_job_id))
        assert job is not None
        job.meta["progress"] = {"phase": "writing", "done": 15, "total": 30}
        job.save_meta()
        r = self.client.get(
            f"/p/p1/trainsets/{trainset.pk}/status/", headers={"HX-Request": "true"}
        )
        self.assertContains(r, "Writing rows: 15 of 30")
        self.assertContains(r, 'value="50"')
        self.assertContains(r, 'hx-trigger="every 2s')

    def test_the_status_fragment_hides_other_projects(self) -> None:
        self.post([{"text": f"r{i}"} for i in range(30)])
        trainset = Trainset.objects.get()
        self.assertEqual(
            self.status_for(self.charlie, "get", f"/p/p1/trainsets/{trainset.pk}/status/"), 404
        )


class ResplitTestCase(WebTestCase):
    def test_a_trainset_that_runs_used_keeps_its_split(self) -> None:
        trainset = self.make_trainset(dev_every=4)
        before = list(trainset.rows.order_by("index").values_list("split", flat=True))
        url = f"/p/p1/trainsets/{trainset.pk}/"
        self.login(self.bob)
        self.assertContains(self.client.get(url), "Split again")
        self.make_run(trainset=trainset)
        page = self.client.get(url)
        self.assertContains(page, "1 run used this trainset, so its split is fixed")
        self.assertNotContains(page, "Split again")
        r = self.client.post(f"{url}split/", {"dev_ratio": "0.5", "split_seed": "3"}, follow=True)
        self.assertContains(r, "1 run(s) used this trainset, so its split is fixed")
        trainset.refresh_from_db()
        self.assertEqual((trainset.dev_ratio, trainset.split_seed), (0.2, 0))
        self.assertEqual(
            list(trainset.rows.order_by("index").values_list("split", flat=True)), before
        )

    def test_a_seed_beyond_32_bits_is_refused(self) -> None:
        trainset = self.make_trainset()
        self.login(self.bob)
        r = self.client.post(
            f"/p/p1/trainsets/{trainset.pk}/split/",
            {"dev_ratio": "0.5", "split_seed": str(2**40)},
            follow=True,
        )
        self.assertIn("214748364", r.content.decode().replace(",", ""))  # names the bound
        with self.assertRaisesMessage(ValueError, "The split seed must be between"):
            trainset.resplit(0.5, 2**40)
        trainset.refresh_from_db()
        self.assertEqual(trainset.split_seed, 0)
