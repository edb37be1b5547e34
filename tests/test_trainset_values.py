"""Uploads as an attacker sends them: values JSON or CSV can spell but no database (PostgreSQL's
text and jsonb above all) or page can hold, and rows missing what a run needs.

Everything goes through the real upload view; run this file on SQLite and on PostgreSQL
(DATABASE_URL=postgres://...).
"""

from __future__ import annotations

import json

from django.core.files.uploadedfile import SimpleUploadedFile

from jobs.models import BootstrapRun, Trainset, TrainsetRow
from jobs.services import runs, trainsets
from tests.web import WebTestCase

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


class UnstorableValuesTestCase(WebTestCase):
    """Every bad value gets a 400 naming its line (row) and column, and nothing is written."""

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
