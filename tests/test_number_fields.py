"""Malformed numbers in forms, query strings and URLs: out-of-range and non-numeric values are a
form error, a 400 or a 404, never a 500."""

from __future__ import annotations

import re
from typing import Any

import dspy
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs.engine.training_data import call_messages, signature_to_dict
from jobs.models import BootstrapRun, FinetuneJob, Trace, Trainset
from tests.web import WebTestCase

HUGE = "99999999999999999999"  # above any 64-bit integer column
NOT_NUMBERS = (HUGE, "-" + HUGE, "abc", "1e999", "nan", "", "²")


class MalformedNumbersTestCase(WebTestCase):
    """Out-of-range and non-numeric values: a form error, a 400 or a 404, never a 500 (the test
    client re-raises a view's exception, so a crash fails the test)."""

    def setUp(self) -> None:
        super().setUp()
        self.login(self.bob)  # an operator

    def test_upload_split_seed(self) -> None:
        for seed in (HUGE, str(2**31), "abc"):
            with self.subTest(seed=seed):
                r = self.client.post(
                    "/p/p1/trainsets/upload/",
                    {
                        "file": SimpleUploadedFile("t.jsonl", b'{"text": "a", "label": "b"}\n'),
                        "dev_ratio": "0.2",
                        "split_seed": seed,
                    },
                )
                self.assertEqual(r.status_code, 400)
                self.assertIn("split_seed", r.context["form"].errors)
        self.assertFalse(Trainset.objects.exists())

    def test_resplit_seed(self) -> None:
        trainset = self.make_trainset()
        for seed in (HUGE, str(-(2**31) - 1), "abc"):
            with self.subTest(seed=seed):
                r = self.client.post(
                    f"/p/p1/trainsets/{trainset.pk}/split/",
                    {"dev_ratio": "0.5", "split_seed": seed},
                    follow=True,
                )
                self.assertContains(r, "split_seed:")
        trainset.refresh_from_db()
        self.assertEqual(trainset.split_seed, 0)
        self.client.post(
            f"/p/p1/trainsets/{trainset.pk}/split/", {"dev_ratio": "0.5", "split_seed": 2**31 - 1}
        )
        trainset.refresh_from_db()
        self.assertEqual(trainset.split_seed, 2**31 - 1)

    def test_fine_tune_hyperparameters(self) -> None:
        from tests.test_review_sets import form_data

        run = self.make_run()
        self.make_trace(run, 0, review_state="approved")
        student = self.make_model("student")
        for field in ("seed", "epochs", "max_steps", "batch_size", "max_seq_length", "lora_r"):
            for value in (HUGE, "abc"):
                with self.subTest(field=field, value=value):
                    r = self.client.post(
                        f"/p/p1/runs/{run.pk}/finetune/", form_data(student.pk, **{field: value})
                    )
                    self.assertEqual(r.status_code, 400)
                    self.assertIn(field, r.context["form"].errors)
        for field in ("learning_rate", "warmup_ratio"):
            for value in ("1e999", "nan", "abc"):
                with self.subTest(field=field, value=value):
                    r = self.client.post(
                        f"/p/p1/runs/{run.pk}/finetune/", form_data(student.pk, **{field: value})
                    )
                    self.assertIn(field, r.context["form"].errors)
        self.assertFalse(FinetuneJob.objects.exists())

    def test_fine_tune_preview_trace_set(self) -> None:
        run = self.make_run()
        for value in (HUGE, "²", "abc"):
            with self.subTest(value=value):
                r = self.client.get(f"/p/p1/runs/{run.pk}/finetune/preview/", {"trace_set": value})
                self.assertEqual(r.status_code, 200)

    def test_bootstrap_run_numbers(self) -> None:
        from tests.test_run_forms import run_post

        setup = {
            "trainset": self.make_trainset().pk,
            "program_version": self.make_program().pk,
            "teacher": self.make_model("teacher").pk,
        }
        for field in ("num_threads", "limit", "num_demos", "demo_seed"):
            for value in (HUGE, "abc"):
                with self.subTest(field=field, value=value):
                    r = self.client.post("/p/p1/runs/new/", run_post(setup, **{field: value}))
                    self.assertEqual(r.status_code, 400)
                    self.assertIn(field, r.context["form"].errors)
        self.assertFalse(BootstrapRun.objects.exists())

    def test_run_estimate(self) -> None:
        for field in ("trainset", "program_version", "limit", "num_demos"):
            for value in NOT_NUMBERS:
                with self.subTest(field=field, value=value):
                    r = self.client.get("/p/p1/runs/estimate/", {field: value})
                    self.assertEqual(r.status_code, 200)
        r = self.client.get("/p/p1/runs/new/", {"trainset": HUGE})
        self.assertEqual(r.status_code, 200)

    def test_program_module_count(self) -> None:
        from tests.test_programs import CLASSIFY, form_post

        for total in ("abc", HUGE, "-5", "100000"):
            with self.subTest(total=total):
                data = form_post("s", CLASSIFY)
                data["modules-TOTAL_FORMS"] = total
                r = self.client.post("/p/p1/programs/new/", data)
                self.assertEqual(r.status_code, 400)
                r = self.client.post("/p/p1/programs/new/", {**data, "add_module": "1"})
                self.assertEqual(r.status_code, 200)
                rows = re.findall(rb'name="modules-\d+-signature"', r.content)
                self.assertLessEqual(len(rows), 21)
                r = self.client.post("/p/p1/programs/validate/", data)
                self.assertEqual(r.status_code, 200)
                r = self.client.get("/p/p1/programs/module-row/", {"modules-TOTAL_FORMS": total})
                self.assertEqual(r.status_code, 200)

    def test_review_filters_page_and_threshold(self) -> None:
        run = self.make_run()
        self.make_trace(run, 0)
        queue = f"/p/p1/runs/{run.pk}/review/"
        for value in NOT_NUMBERS:
            with self.subTest(value=value):
                for params in ({"min": value}, {"max": value}, {"page": value}):
                    self.assertEqual(self.client.get(queue, params).status_code, 200)
                r = self.client.get(f"{queue}threshold/", {"t": value})
                self.assertEqual(r.status_code, 200)
                r = self.client.post(f"{queue}bulk/", {"action": "approve_above", "t": value})
                self.assertEqual(r.status_code, 302)

    def test_review_required_approvals(self) -> None:
        run = self.make_run()
        for value in (*NOT_NUMBERS, "9" * 5000, "0", "21"):
            with self.subTest(value=value[:30]):
                r = self.client.post(
                    f"/p/p1/runs/{run.pk}/review/settings/",
                    {"required_approvals": value},
                    follow=True,
                )
                self.assertContains(r, "Required approvals")
        run.refresh_from_db()
        self.assertEqual(run.required_approvals, 1)

    def test_review_edit_of_a_number_field(self) -> None:
        run = self.make_run()
        signature = signature_to_dict(
            dspy.Signature("text -> confidence: float, votes: int", "Rate it.")
        )
        call: dict[str, Any] = {
            "predictor": "rate",
            "signature": signature,
            "inputs": {"text": "a"},
            "outputs": {"confidence": 0.5, "votes": 3},
        }
        call["messages"] = call_messages(call)
        trace = Trace.objects.create(
            run=run,
            example_index=0,
            inputs={"text": "a"},
            outputs=dict(call["outputs"]),
            calls=[call],
            score=1.0,
            passed=True,
            parsed=True,
        )
        url = f"/p/p1/runs/{run.pk}/review/{trace.pk}/edit/"
        for field, value in (
            ("confidence", "1e999"),
            ("confidence", "nan"),
            ("confidence", "abc"),
            ("votes", "9" * 5000),
            ("votes", "1.5"),
        ):
            with self.subTest(field=field, value=value[:30]):
                r = self.client.post(url, {f"field:{field}": value})
                self.assertContains(r, f"{field}:", status_code=400)
        trace.refresh_from_db()
        self.assertIsNone(trace.edited_outputs or None)

    def test_ids_in_urls(self) -> None:
        for url in (
            f"/p/p1/runs/{HUGE}/",
            f"/p/p1/runs/{HUGE}/review/",
            f"/p/p1/trainsets/{HUGE}/",
            f"/p/p1/programs/{HUGE}/",
            f"/p/p1/programs/1/v/{HUGE}/",
            f"/p/p1/jobs/{HUGE}/",
            f"/p/p1/members/{HUGE}/remove/",
        ):
            with self.subTest(url=url):
                self.client.force_login(self.alice)
                method = self.client.post if url.endswith("remove/") else self.client.get
                self.assertEqual(method(url).status_code, 404)
