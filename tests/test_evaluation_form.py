"""The forms that start an evaluation: the evaluation form (new, or prefilled from a fine-tune or
a run) and the fine-tune form's "evaluate on the dev split when done"."""

from __future__ import annotations

from typing import Any

from jobs.models import Evaluation, FinetuneJob, Trainset
from tests.test_evaluation_pages import EvaluationPagesBase


class EvaluationFormTestCase(EvaluationPagesBase):
    def post(self, **changes: Any):
        data: dict[str, Any] = {
            "program_version": self.version.pk,
            "trainset": self.trainset.pk,
            "split": "dev",
            "run": self.bootstrap_run.pk,
            "metric": "exact_match",
            "metric_field": "sentiment",
            "threshold": "1",
            "num_threads": "4",
            "model_1": self.teacher.pk,
            "role_1": "teacher",
            "prompting_1": "run_demos",
            "model_2": self.base.pk,
            "role_2": "base",
            "prompting_2": "zero_shot",
            "role_3": "model",
            "prompting_3": "zero_shot",
            "role_4": "model",
            "prompting_4": "zero_shot",
        }
        data.update(changes)
        self.login(self.bob)
        return self.client.post(
            "/p/p1/evaluations/new/", {k: v for k, v in data.items() if v is not None}
        )

    def test_it_queues_an_evaluation(self) -> None:
        r = self.post(limit="5")
        evaluation = Evaluation.objects.get()
        self.assertRedirects(r, f"/p/p1/evaluations/{evaluation.pk}/")
        self.assertEqual(evaluation.rows, 5)
        self.assertEqual(evaluation.total, 10)
        self.assertEqual(evaluation.num_threads, 4)
        self.assertEqual(evaluation.run, self.bootstrap_run)
        candidates = list(evaluation.candidates.values_list("role", "prompting", "language_model"))
        self.assertEqual(
            candidates,
            [("teacher", "run_demos", self.teacher.pk), ("base", "zero_shot", self.base.pk)],
        )

    def assert_field_error(self, response, field: str, words: str) -> None:
        self.assertEqual(response.status_code, 400)
        errors = response.context["form"].errors
        self.assertIn(field, errors, errors)
        self.assertIn(words, " ".join(errors[field]))
        self.assertContains(response, words.replace("'", "&#x27;"), status_code=400)

    def test_its_errors_name_the_field(self) -> None:
        self.assert_field_error(self.post(metric_field="mood"), "metric_field", "is not an output")
        self.assert_field_error(
            self.post(run=None), "prompting_1", "“With the run's demos” needs a run"
        )
        self.assert_field_error(
            self.post(model_1=None, model_2=None), "model_1", "Pick at least one model"
        )
        self.assert_field_error(
            self.post(model_2=self.teacher.pk, role_2="model", prompting_2="run_demos"),
            "model_2",
            "Candidate 1 is already teacher",
        )
        self.assert_field_error(self.post(role_2="teacher"), "role_2", "Only one candidate")
        self.assert_field_error(self.post(split="bogus"), "split", "Select a valid choice")
        self.assert_field_error(
            self.post(num_threads="0"), "num_threads", "greater than or equal to 1"
        )
        self.assert_field_error(self.post(metric="regex"), "pattern", "needs a pattern")
        Trainset.objects.filter(pk=self.trainset.pk).update(
            fields=[{"name": "text", "type": "str", "fill_rate": 1.0}]
        )
        self.assert_field_error(self.post(), "trainset", "does not fit")
        self.assertFalse(Evaluation.objects.exists())

    def test_a_split_without_rows_is_refused_on_the_split(self) -> None:
        self.trainset.rows.filter(split="dev").update(split="train")
        self.assert_field_error(self.post(), "split", "has no dev rows")

    def test_it_prefills_from_a_fine_tune(self) -> None:
        self.login(self.bob)
        r = self.client.get(f"/p/p1/evaluations/new/?job={self.job.pk}")
        initial = r.context["form"].initial
        self.assertEqual(initial["run"], self.bootstrap_run.pk)
        self.assertEqual(initial["metric_field"], "sentiment")
        self.assertEqual(initial["metric"], "exact_match")
        slots = [
            (initial.get(f"model_{i}"), initial.get(f"role_{i}"), initial.get(f"prompting_{i}"))
            for i in (1, 2, 3, 4)
        ]
        self.assertEqual(
            slots,
            [
                (self.teacher.pk, "teacher", "run_demos"),
                (self.base.pk, "base", "zero_shot"),
                (self.student.pk, "student", "zero_shot"),
                (None, None, None),
            ],
        )
        self.assertContains(
            r, f'<option value="{self.student.pk}" selected>base-ft-1</option>', html=True
        )

    def test_it_prefills_from_a_run_and_ignores_other_projects(self) -> None:
        self.login(self.bob)
        r = self.client.get(f"/p/p1/evaluations/new/?run={self.bootstrap_run.pk}")
        initial = r.context["form"].initial
        self.assertEqual((initial["model_1"], initial["role_1"]), (self.teacher.pk, "teacher"))
        self.assertNotIn("model_2", initial)
        for params in ("?run=999999", "?job=abc", "?run=-1&job=999999"):
            r = self.client.get(f"/p/p1/evaluations/new/{params}")
            self.assertEqual(r.status_code, 200, params)
            self.assertNotIn("model_1", r.context["form"].initial)


class FinetuneFormCheckboxTestCase(EvaluationPagesBase):
    def test_the_fine_tune_form_offers_evaluation_ticked(self) -> None:
        self.login(self.bob)
        r = self.client.get(f"/p/p1/runs/{self.bootstrap_run.pk}/finetune/")
        self.assertContains(r, "Evaluate on the dev split when done")
        self.assertContains(r, 'id="id_evaluate_when_done" checked>')

    def test_the_fine_tune_takes_the_choice(self) -> None:
        from tests.test_review_sets import form_data

        for i in range(4):
            self.make_trace(self.bootstrap_run, i)
        self.login(self.bob)
        url = f"/p/p1/runs/{self.bootstrap_run.pk}/finetune/"
        for ticked in (True, False):
            data = form_data(self.base.pk, selection="all", max_label_share="")
            if ticked:
                data["evaluate_when_done"] = "on"
            r = self.client.post(url, data)
            job = FinetuneJob.objects.exclude(pk=self.job.pk).latest("pk")
            self.assertRedirects(r, f"/p/p1/jobs/{job.pk}/", fetch_redirect_response=False)
            self.assertEqual(job.evaluate_when_done, ticked)
