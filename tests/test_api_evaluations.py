"""/api/v1/projects/<slug>/evaluations/: create (the form's rules; candidate slots as a list),
list, detail with candidates and progress, results, cancel."""

from __future__ import annotations

from jobs.models import Evaluation, EvaluationCandidate, EvaluationResult
from tests.api_client import READ, WRITE_OK, ApiTestCase

URL = "/api/v1/projects/p1/evaluations/"


class EvaluationApiTestCase(ApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.trainset = self.make_trainset(dev_every=2)
        self.version = self.make_program()
        self.teacher = self.make_model("teacher")
        self.student = self.make_model("student")

    def payload(self, **overrides: object) -> dict[str, object]:
        return {
            "program_version": self.version.pk,
            "trainset": self.trainset.pk,
            "metric": "exact_match",
            "metric_field": "sentiment",
            "candidates": [
                {"model": self.teacher.pk, "role": "teacher"},
                {"model": self.student.pk, "role": "base"},
            ],
            **overrides,
        }

    def test_it_queues_an_evaluation_of_each_candidate(self) -> None:
        with self.captureOnCommitCallbacks(execute=True):
            r = self.api("post", URL, self.payload(limit=2))
        self.assertEqual(r.status_code, 201, r.content)
        body = r.json()
        evaluation = Evaluation.objects.get()
        self.assertEqual((body["id"], body["split"], body["rows"]), (evaluation.pk, "dev", 2))
        self.assertEqual([c["role"] for c in body["candidates"]], ["teacher", "base"])
        self.assertEqual(evaluation.created_by, self.alice)
        self.assertEqual(body["metric"]["threshold"], 1.0)  # the form's default

    def test_refusals_name_the_field_and_the_candidate(self) -> None:
        r = self.api("post", URL, self.payload(metric_field="mood"))
        self.assertEqual(r.json()["errors"][0]["field"], "metric_field")
        theirs = self.make_model("theirs", project=self.p2)
        r = self.api(
            "post",
            URL,
            self.payload(candidates=[{"model": self.teacher.pk}, {"model": theirs.pk}]),
        )
        self.assertEqual(r.status_code, 400)
        self.assertEqual(r.json()["errors"][0]["field"], "candidates[1].model")
        r = self.api(
            "post",
            URL,
            self.payload(candidates=[{"model": self.teacher.pk, "prompting": "run_demos"}]),
        )
        self.assertEqual(r.json()["errors"][0]["field"], "candidates[0].prompting")
        r = self.api("post", URL, self.payload(candidates=[]))
        self.assertEqual(r.json()["errors"][0]["field"], "candidates")
        self.assertFalse(Evaluation.objects.exists())

    def test_results_page_and_filter_by_candidate(self) -> None:
        evaluation_id = self.api("post", URL, self.payload()).json()["id"]
        candidates = list(EvaluationCandidate.objects.order_by("position"))
        EvaluationResult.objects.bulk_create(
            EvaluationResult(candidate=c, row_index=i, outputs={"sentiment": "positive"}, score=1.0)
            for c in candidates
            for i in (1, 3)
        )
        r = self.api("get", f"{URL}{evaluation_id}/results/", {"page_size": 3})
        body = r.json()
        self.assertEqual(len(body["results"]), 3)
        self.assertEqual(len(self.api("get", body["next"]).json()["results"]), 1)
        r = self.api("get", f"{URL}{evaluation_id}/results/", {"candidate": candidates[1].pk})
        self.assertEqual({x["candidate"] for x in r.json()["results"]}, {candidates[1].pk})
        self.assertEqual(
            self.api("get", f"{URL}{evaluation_id}/results/", {"candidate": "x"}).status_code, 400
        )

    def test_keys_and_roles(self) -> None:
        self.assert_keys("get", URL, READ)
        self.assert_keys("post", URL, {**WRITE_OK, "rw": 201}, self.payload())
        evaluation = Evaluation.objects.get()
        self.assert_keys("get", f"{URL}{evaluation.pk}/", READ)
        self.assert_keys("get", f"{URL}{evaluation.pk}/results/", READ)
        self.assert_keys("post", f"{URL}{evaluation.pk}/cancel/", {**WRITE_OK, "rw": 200})
        self.assertEqual(Evaluation.objects.get().status, "cancelled")
        self.assertEqual(
            self.api(
                "get", f"/api/v1/projects/p2/evaluations/{evaluation.pk}/", key="other"
            ).status_code,
            404,
        )
