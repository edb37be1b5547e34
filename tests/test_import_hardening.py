"""Uploads as an attacker sends them: values JSON or CSV can spell but no database (PostgreSQL's
text and jsonb above all) or page can hold, rows missing what a run needs, a queue that is down,
a lost import, bodies over the size limit, and re-splitting a trainset that runs have used.

Everything goes through the real upload view, the real Redis and a real RQ worker; run this
file on SQLite and on PostgreSQL (DATABASE_URL=postgres://...).
"""

from __future__ import annotations

import io
import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import HttpResponseBase
from django.test import Client, override_settings
from django.utils.timezone import now
from rq import SimpleWorker

from jobs.devtools import free_port
from jobs.models import BootstrapRun, Trainset, TrainsetImport, TrainsetRow
from jobs.services import queue, runs, trainsets
from tests.base import WorkerTestCase
from tests.web import WebTestCase

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

URL = "/p/p1/trainsets/upload/"
GOOD = '{"text": "fine", "sentiment": "positive"}'

# A line that cannot be stored, between two good lines of "t.jsonl" (so it is line 2):
# (what, the line, the column the 400 names)
BAD_JSONL_LINES = [
    ("escaped NUL in a value", '{"text": "a\\u0000b", "sentiment": "x"}', "text"),
    ("escaped NUL in a key", '{"te\\u0000xt": "a", "sentiment": "x"}', "te\\u0000xt"),
    ("lone high surrogate", '{"text": "\\ud800", "sentiment": "x"}', "text"),
    ("surrogate then text", '{"text": "\\ud83dx", "sentiment": "x"}', "text"),
    ("lone low surrogate key", '{"\\udc00": "a", "sentiment": "x"}', "\\udc00"),
    ("surrogate in a list", '{"text": ["ok", "\\udfff"], "sentiment": "x"}', "text"),
    ("NaN", '{"text": NaN, "sentiment": "x"}', None),
    ("Infinity", '{"text": "a", "sentiment": Infinity}', None),
    ("-Infinity", '{"text": "a", "sentiment": -Infinity}', None),
    ("1e400", '{"text": "a", "score": 1e400, "sentiment": "x"}', "score"),
    ("-1e400 in a list", '{"text": "a", "score": [1, -1e400], "sentiment": "x"}', "score"),
    ("raw NUL in a JSON string", '{"text": "a\x00b", "sentiment": "x"}', None),
]
# A whole "t.csv": (what, the file, where the 400 says the problem is, the column it names)
BAD_CSV_FILES = [
    ("NUL in a CSV cell", "text,sentiment\nfine,positive\nbad\x00cell,x\n", "row 2", "text"),
    ("NUL in a CSV header", "text,senti\x00ment\nfine,positive\n", "header", "senti\\u0000ment"),
]
# (what, file name, content, where the 400 says the problem is, the column it names)
UNSTORABLE = [
    *((what, "t.jsonl", line, "line 2", column) for what, line, column in BAD_JSONL_LINES),
    *((what, "t.csv", text, where, column) for what, text, where, column in BAD_CSV_FILES),
]


def upload(filename: str, content: bytes, **fields: object) -> dict[str, object]:
    return {
        "file": SimpleUploadedFile(filename, content),
        "dev_ratio": "0",
        "split_seed": "7",
        **fields,
    }


def file_of(filename: str, text: str) -> bytes:
    """JSONL: a good line, then ``text``; CSV: ``text`` is the whole file."""
    return (text if filename.endswith(".csv") else f"{GOOD}\n{text}\n{GOOD}\n").encode()


def no_unstorable(text: str) -> bool:
    return "\x00" not in text and not any("\ud800" <= c <= "\udfff" for c in text)


def run_worker() -> None:
    rq_queue = queue.get_queue("default")
    SimpleWorker([rq_queue], connection=rq_queue.connection, serializer=rq_queue.serializer).work(
        burst=True
    )


class UnstorableValuesTestCase(WebTestCase):
    """Point 4: every bad value gets a 400 naming its line (row) and column, and nothing is written."""

    def test_every_unstorable_value_is_a_400_naming_line_and_column(self) -> None:
        self.login(self.bob)
        for what, filename, text, where, column in UNSTORABLE:
            with self.subTest(what):
                r = self.client.post(URL, upload(filename, file_of(filename, text)))
                self.assertEqual(r.status_code, 400)
                page = r.content.decode("utf-8")  # the page itself is valid UTF-8
                self.assertTrue(no_unstorable(page))
                errors = page[page.index('id="upload-errors"') :]
                self.assertIn(f'<td class="loc">{where}</td>', errors)
                if column:
                    self.assertIn(f'<td class="loc">{column}</td>', errors)
                self.assertIn("Nothing was imported", errors)
                self.assertFalse(Trainset.objects.exists())
                self.assertFalse(TrainsetRow.objects.exists())

    def test_the_messages_say_what_is_wrong(self) -> None:
        self.login(self.bob)
        expected = {
            "escaped NUL in a value": "contains a NUL character (\\u0000), which cannot be stored",
            "lone high surrogate": "contains an unpaired surrogate (\\ud800)",
            "NaN": "NaN is not allowed",
            "1e400": "a number too large to store",
            "raw NUL in a JSON string": "invalid JSON: Invalid control character",
        }
        cases = {case[0]: case for case in UNSTORABLE}
        for what, message in expected.items():
            with self.subTest(what):
                _, filename, text, _, _ = cases[what]
                r = self.client.post(URL, upload(filename, file_of(filename, text)))
                self.assertContains(r, message, status_code=400)

    def test_skipping_bad_rows_imports_the_good_ones_and_stores_a_safe_summary(self) -> None:
        self.login(self.bob)
        for what, filename, text, where, _column in UNSTORABLE:
            if where == "header":  # a broken header fails the whole file, skipping or not
                continue
            with self.subTest(what):
                r = self.client.post(
                    URL, upload(filename, file_of(filename, text), skip_bad_rows="on")
                )
                trainset = Trainset.objects.get()
                self.assertRedirects(r, f"/p/p1/trainsets/{trainset.pk}/")
                self.assertEqual(trainset.row_count, 2 if filename.endswith(".jsonl") else 1)
                self.assertEqual(trainset.rows.count(), trainset.row_count)
                self.assertIn(where, trainset.error)
                self.assertTrue(no_unstorable(trainset.error))
                for row in trainset.rows.all():
                    self.assertTrue(no_unstorable(json.dumps(row.data, ensure_ascii=False)))
                self.assertEqual(self.client.get(r["Location"]).status_code, 200)
                trainset.delete()

    def test_a_split_seed_beyond_32_bits_is_refused(self) -> None:
        self.login(self.bob)
        for seed in (2**31, -(2**31) - 1, 10**30):
            with self.subTest(seed):
                r = self.client.post(
                    URL, upload("t.jsonl", f"{GOOD}\n".encode(), split_seed=str(seed))
                )
                self.assertEqual(r.status_code, 400)
                self.assertIn("214748364", r.content.decode().replace(",", ""))  # names the bound
                self.assertFalse(Trainset.objects.exists())
        with self.assertRaisesMessage(ValueError, "The split seed must be between"):
            trainsets.import_upload(
                project=self.p1,
                user=self.bob,
                upload=SimpleUploadedFile("t.jsonl", b"{}"),
                name="t",
                fmt="jsonl",
                skip_bad_rows=False,
                dev_ratio=0.0,
                split_seed=2**31,
            )
        self.assertFalse(Trainset.objects.exists())
        r = self.client.post(
            URL, upload("t.jsonl", f"{GOOD}\n".encode(), split_seed=str(2**31 - 1))
        )
        self.assertEqual(r.status_code, 302)

    def test_a_file_name_of_any_length_fits(self) -> None:
        self.login(self.bob)
        r = self.client.post(URL, upload("n" * 400 + ".jsonl", f"{GOOD}\n".encode()))
        trainset = Trainset.objects.get()
        self.assertRedirects(r, f"/p/p1/trainsets/{trainset.pk}/")
        self.assertEqual(len(trainset.name), 200)  # the default name, from a 250-character stem
        self.assertLessEqual(len(trainset.file_name), 300)


@override_settings(BFT_TRAINSET_ASYNC_ROWS=5)
class BackgroundImportTestCase(WebTestCase):
    """The same checks on a worker, and the import as a row that reconcile covers."""

    def post(self, content: bytes, **fields: object):
        self.client.force_login(self.bob)
        with self.captureOnCommitCallbacks(execute=True):
            return self.client.post(URL, upload("big.jsonl", content, **fields))

    def uploads(self) -> list[object]:
        return list((self.artifacts / "uploads").iterdir())

    def test_an_unstorable_value_fails_the_import_on_the_worker_and_writes_nothing(self) -> None:
        lines = [GOOD] * 8 + ['{"text": "a\\u0000b", "sentiment": "x"}']
        self.post("\n".join(lines).encode())
        work = TrainsetImport.objects.get()
        self.assertEqual(work.status, "queued")
        run_worker()
        work.refresh_from_db()
        trainset = work.trainset
        trainset.refresh_from_db()
        self.assertEqual((work.status, trainset.status), ("failed", "failed"))
        self.assertIn("line 9", trainset.error)
        self.assertIn("NUL character", trainset.error)
        self.assertTrue(no_unstorable(trainset.error))
        self.assertFalse(TrainsetRow.objects.exists())
        self.assertEqual(self.uploads(), [])
        self.assertContains(self.client.get(f"/p/p1/trainsets/{trainset.pk}/"), "line 9")

    def test_the_import_row_succeeds_with_the_rows_and_their_places(self) -> None:
        self.post(("\n" + "\n".join([GOOD] * 6) + "\n").encode())  # a blank first line
        run_worker()
        work = TrainsetImport.objects.select_related("trainset").get()
        self.assertEqual((work.status, work.trainset.status), ("succeeded", "ready"))
        self.assertEqual(
            list(work.trainset.rows.order_by("index").values_list("source_number", flat=True)),
            [2, 3, 4, 5, 6, 7],
        )
        self.assertEqual(self.uploads(), [])

    def test_reconcile_ends_an_import_whose_job_the_queue_lost(self) -> None:
        self.post("\n".join([GOOD] * 8).encode())
        work = TrainsetImport.objects.get()
        self.assertEqual(len(self.uploads()), 1)
        self.redis.flushdb()  # Redis restarted without persistence: the job is gone
        self.assertEqual(queue.reconcile_stale(), [])  # within the grace period: left alone
        TrainsetImport.objects.filter(pk=work.pk).update(updated=now() - timedelta(minutes=5))
        changed = queue.reconcile_stale()
        self.assertEqual([(type(row), row.pk) for row in changed], [(TrainsetImport, work.pk)])
        work.refresh_from_db()
        trainset = Trainset.objects.get()
        self.assertEqual((work.status, trainset.status), ("failed", "failed"))
        self.assertIn("The queue lost this job", trainset.error)
        self.assertEqual(self.uploads(), [])
        run_worker()  # nothing left to run, and nothing changes
        trainset.refresh_from_db()
        self.assertEqual(trainset.status, "failed")

    def test_reconcile_fails_a_trainset_left_importing_without_an_import_row(self) -> None:
        trainset = self.make_trainset()  # as a version that kept no import row left it
        Trainset.objects.filter(pk=trainset.pk).update(status="importing")
        queue.reconcile_stale()
        trainset.refresh_from_db()
        self.assertEqual(trainset.status, "failed")
        self.assertIn("interrupted", trainset.error)

    def test_a_worker_that_finds_the_import_ended_leaves_it_alone(self) -> None:
        self.post("\n".join([GOOD] * 8).encode())
        work = TrainsetImport.objects.get()
        queue.mark_failed(row=work, user=self.alice)  # before any worker claimed it
        # Marking it failed settles it at once (trainset failed, file removed), as every way an
        # import ends does; the worker then finds it ended and leaves it alone.
        self.assertEqual(Trainset.objects.get().status, "failed")
        run_worker()
        self.assertFalse(TrainsetRow.objects.exists())
        queue.reconcile_stale()
        self.assertEqual(Trainset.objects.get().status, "failed")
        self.assertEqual(self.uploads(), [])


@override_settings(BFT_TRAINSET_ASYNC_ROWS=5)
class QueueDownTestCase(WorkerTestCase):
    """Point 5: Redis is down when a large upload is queued (committed for real: on_commit runs)."""

    def test_the_upload_ends_with_a_message_no_importing_trainset_and_no_file(self) -> None:
        dead = f"redis://127.0.0.1:{free_port()}/0"
        queues = {name: {**conf, "URL": dead} for name, conf in settings.RQ_QUEUES.items()}
        self.client.force_login(self.bob)
        with override_settings(RQ_QUEUES=queues, REDIS_URL=dead):
            r = self.client.post(
                URL, upload("big.jsonl", "\n".join([GOOD] * 8).encode()), follow=True
            )
        trainset = Trainset.objects.get()
        self.assertEqual(r.redirect_chain, [(f"/p/p1/trainsets/{trainset.pk}/", 302)])
        self.assertContains(r, "The queue was unavailable")
        self.assertContains(r, "The import failed; nothing was imported.")
        self.assertEqual(trainset.status, "failed")
        self.assertEqual(trainset.background_import.status, "failed")
        self.assertFalse(TrainsetRow.objects.exists())
        self.assertEqual(list((self.artifacts / "uploads").iterdir()), [])


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

    def test_a_body_within_the_limit_is_read_and_checked_as_before(self) -> None:
        self.login(self.bob)
        r = self.client.post(URL, upload("t.jsonl", f"{GOOD}\n".encode() * 100))
        self.assertEqual(r.status_code, 302)  # 4.3 KB: imported
        r = self.client.post(URL, upload("t.jsonl", f"{GOOD}\n".encode() * 300))
        self.assertContains(r, "the limit is 9.8\xa0KB", status_code=400)  # 13 KB: the form says so


class MissingFieldsTestCase(WebTestCase):
    """Rows that lack a program input or the metric's field: counted on upload, refused by the run
    form with the count and the first lines, or skipped (recorded, never sent to the teacher)."""

    def setUp(self) -> None:
        super().setUp()
        self.login(self.bob)
        lines = [
            '{"text": "good", "sentiment": "positive"}',
            "",
            '{"text": "no label"}',  # line 3
            '{"text": "bad", "sentiment": "negative"}',
            '{"text": null, "sentiment": "negative"}',  # line 5
            '{"text": "fine", "sentiment": "positive", "note": "x"}',
            '{"text": "null label", "sentiment": null}',  # line 7
        ]
        self.client.post(URL, upload("t.jsonl", "\n".join(lines).encode()))
        self.trainset = Trainset.objects.get()
        self.version = self.make_program()
        self.teacher = self.make_model("teacher")
        self.run_form = {
            "trainset": self.trainset.pk,
            "program_version": self.version.pk,
            "teacher": self.teacher.pk,
            "metric": "exact_match",
            "metric_field": "sentiment",
            "threshold": "1.0",
            "num_threads": "1",
            "num_demos": "4",
            "demo_seed": "0",
        }

    def test_the_upload_counts_missing_and_null_values_per_field(self) -> None:
        missing = {f["name"]: f["missing"] for f in self.trainset.fields}
        self.assertEqual(missing, {"text": 1, "sentiment": 2, "note": 5})
        r = self.client.get(f"/p/p1/trainsets/{self.trainset.pk}/")
        self.assertContains(r, "Missing</th>")

    def test_the_run_form_refuses_them_with_the_count_and_the_first_lines(self) -> None:
        r = self.client.post("/p/p1/runs/new/", self.run_form)
        self.assertContains(
            r,
            "3 train row(s) lack a value for text or sentiment (missing or null): "
            "line 3, line 5, line 7",
            status_code=400,
        )
        self.assertFalse(BootstrapRun.objects.exists())

    def test_the_service_refuses_them_too(self) -> None:
        from jobs.engine.types import BootstrapConfig, MetricSpec

        with self.assertRaisesMessage(ValueError, "line 3, line 5, line 7"):
            runs.create_bootstrap_run(
                project=self.p1,
                trainset=self.trainset,
                program_version=self.version,
                teacher=self.teacher,
                metric=MetricSpec("exact_match", "sentiment"),
                config=BootstrapConfig(),
                user=self.bob,
            )
        self.assertFalse(BootstrapRun.objects.exists())

    def test_ticked_they_are_skipped_recorded_and_never_sent_to_the_teacher(self) -> None:
        r = self.client.post("/p/p1/runs/new/", {**self.run_form, "skip_missing": "on"})
        run = BootstrapRun.objects.get()
        self.assertRedirects(r, f"/p/p1/runs/{run.pk}/", fetch_redirect_response=False)
        self.assertEqual((run.total, run.skipped), (3, 3))
        examples, demos, _finished = runs.bootstrap_inputs(run)  # what the engine is given
        self.assertEqual([e["data"]["text"] for e in examples], ["good", "bad", "fine"])
        self.assertEqual([d["text"] for d in demos], ["good", "bad", "fine"])
        page = self.client.get(r["Location"])
        self.assertContains(page, '<p class="small" id="run-skipped"><strong>3</strong> train rows')


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


@override_settings(BFT_TRAINSET_ASYNC_ROWS=5)
class ImportAdminTestCase(WebTestCase):
    def test_an_operator_marks_a_stuck_import_failed_in_the_admin(self) -> None:
        self.client.force_login(self.bob)
        with self.captureOnCommitCallbacks(execute=True):
            self.client.post(URL, upload("big.jsonl", "\n".join([GOOD] * 8).encode()))
        work = TrainsetImport.objects.get()
        self.alice.is_staff = self.alice.is_superuser = True
        self.alice.save()
        self.client.force_login(self.alice)
        base = "/admin/jobs/trainsetimport/"
        for url in (base, f"{base}{work.pk}/change/"):
            self.assertEqual(self.client.get(url).status_code, 200)
        r = self.client.post(base, {"action": "mark_failed", "_selected_action": [work.pk]})
        self.assertEqual(r.status_code, 302)
        work.refresh_from_db()
        self.assertEqual((work.status, Trainset.objects.get().status), ("failed", "failed"))
        self.assertEqual(list((self.artifacts / "uploads").iterdir()), [])
