"""Evaluations: what is checked before queueing, what the worker stores, and the evaluation a
fine-tune queues by itself (real worker, bundled model, a student trained to collapse)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobs import tasks
from jobs.engine.demos import pick_demos
from jobs.engine.types import FinetuneConfig, MetricSpec
from jobs.models import (
    Evaluation,
    EvaluationCandidate,
    EvaluationResult,
    FinetuneJob,
    LanguageModel,
)
from jobs.services import comparisons, evaluations, finetunes, queue
from jobs.services.evaluations import CandidateChoice
from tests.base import BaseTestCase
from tests.test_worker import LiveWorkerTestCase

METRIC = MetricSpec("exact_match", "sentiment")
Role = EvaluationCandidate.Role
Prompting = EvaluationCandidate.Prompting


def reviews(n: int) -> list[dict[str, Any]]:
    return [
        {"text": f"review {i}", "sentiment": "positive" if i % 2 else "negative"} for i in range(n)
    ]


class CreateEvaluationTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.trainset = self.make_trainset(reviews(12), dev_every=3)  # dev: 2, 5, 8, 11
        self.version = self.make_program()
        self.model = self.make_model("small", max_tokens=24)

    def create(self, **kwargs: Any) -> Evaluation:
        kwargs.setdefault("candidates", [CandidateChoice(self.model)])
        kwargs.setdefault("trainset", self.trainset)
        return evaluations.create_evaluation(
            project=self.p1,
            program_version=self.version,
            metric=METRIC,
            user=self.bob,
            **kwargs,
        )

    def test_it_counts_rows_times_candidates_and_queues_the_evaluation(self) -> None:
        other = self.make_model("other")
        with self.captureOnCommitCallbacks(execute=True):
            evaluation = self.create(
                candidates=[CandidateChoice(self.model), CandidateChoice(other)]
            )
        self.assertEqual((evaluation.rows, evaluation.total, evaluation.split), (4, 8, "dev"))
        self.assertEqual(
            list(evaluation.candidates.values_list("language_model__name", "position")),
            [("small", 0), ("other", 1)],
        )
        self.assertEqual(queue.get_queue("default").job_ids, [str(evaluation.rq_job_id)])
        rows = evaluations.evaluation_rows(evaluation)
        self.assertEqual([row["index"] for row in rows], [2, 5, 8, 11])
        self.assertEqual(self.create(limit=2).rows, 2)
        self.assertEqual(self.create(split="all").rows, 12)

    def test_refusals_name_the_problem_and_write_nothing(self) -> None:
        theirs = LanguageModel.objects.create(
            project=self.p2, name="theirs", model_name="smollm2", created_by=self.charlie
        )
        cases: list[tuple[dict[str, Any], str]] = [
            ({"candidates": [CandidateChoice(theirs)]}, "belongs to another project"),
            ({"candidates": []}, "at least one model"),
            (
                {"candidates": [CandidateChoice(self.model, prompting=Prompting.RUN_DEMOS)]},
                "needs the run",
            ),
            ({"split": "test"}, "Unknown split 'test'"),
            ({"limit": 0}, "at least 1"),
            ({"num_threads": 0}, "between 1 and 64"),
        ]
        for kwargs, message in cases:
            with self.subTest(message), self.assertRaisesMessage(ValueError, message):
                self.create(**kwargs)
        without_dev = self.make_trainset(reviews(4))
        with self.assertRaisesMessage(ValueError, "no dev rows with every field"):
            self.create(trainset=without_dev)
        self.assertFalse(Evaluation.objects.exists())

    def test_the_teacher_sees_the_demos_its_run_saw(self) -> None:
        run = self.make_run(
            trainset=self.trainset,
            program_version=self.version,
            config={"num_demos": 3, "demo_seed": 7},
        )
        train = [r["data"] for r in self.trainset.rows.filter(split="train").values("data")]
        self.assertEqual(evaluations.run_demos(run), pick_demos(train, 3, 7))
        run.demo_search = {"chosen_demos": [{"index": 4}, {"index": 0}]}
        self.assertEqual(evaluations.run_demos(run), [reviews(12)[4], reviews(12)[0]])

        run.config = {"num_demos": 2, "temperature": 0.3}
        evaluation = self.create(
            run=run,
            candidates=[
                CandidateChoice(run.teacher, Role.TEACHER, Prompting.RUN_DEMOS),
                CandidateChoice(self.model, Role.BASE),
            ],
        )
        teacher, base = evaluation.candidates.order_by("position")
        self.assertEqual((teacher.demos, teacher.temperature), (evaluations.run_demos(run), 0.3))
        self.assertEqual((base.demos, base.temperature), ([], 0.0))

    @pytest.mark.slow
    def test_a_retry_answers_only_the_rows_not_yet_answered(self) -> None:
        evaluation = self.create(limit=3)
        candidate = evaluation.candidates.get()
        EvaluationResult.objects.create(
            candidate=candidate, row_index=2, outputs={"sentiment": "earlier"}, score=1.0
        )
        self.assertEqual(tasks.run_evaluation(evaluation.pk), "succeeded")
        evaluation.refresh_from_db()
        results = dict(candidate.results.values_list("row_index", "outputs"))
        self.assertEqual(sorted(results), [2, 5, 8])
        self.assertEqual(results[2], {"sentiment": "earlier"})  # kept, not answered again
        self.assertEqual(evaluation.done, 3)
        fresh = candidate.results.get(row_index=5)
        self.assertGreater(fresh.tokens_in, 0)
        self.assertGreater(fresh.latency_s, 0)
        self.assertEqual(fresh.lm_calls, 1)
        self.assertEqual(evaluation.verdict["candidates"][0]["n"], 3)

    @pytest.mark.slow
    def test_a_candidate_that_cannot_run_says_why_and_the_others_still_run(self) -> None:
        refused = LanguageModel.objects.create(
            project=self.p1,
            name="leaky",
            kind="litellm",
            model_name="openai/gpt-4o-mini",
            api_key_env="SECRET_KEY",  # edited in the database: the worker refuses it again
            created_by=self.alice,
        )
        evaluation = self.create(limit=2)
        EvaluationCandidate.objects.create(
            evaluation=evaluation, position=1, language_model=refused
        )
        self.assertEqual(tasks.run_evaluation(evaluation.pk), "succeeded")
        good, bad = evaluation.candidates.order_by("position")
        self.assertEqual((good.error, good.results.count()), ("", 2))
        self.assertIn("BFT_LM_KEY_VARS", bad.error)
        self.assertEqual(bad.results.count(), 0)

    def test_exports_hold_every_result_and_csv_is_formula_safe(self) -> None:
        evaluation = self.create()
        candidate = evaluation.candidates.get()
        EvaluationResult.objects.create(
            candidate=candidate, row_index=2, outputs={"sentiment": "=HYPERLINK()"}, raw="@cmd"
        )
        lines = list(comparisons.export_jsonl(evaluation))
        self.assertEqual(json.loads(lines[0])["outputs"], {"sentiment": "=HYPERLINK()"})
        csv_text = "".join(comparisons.export_csv(evaluation))
        self.assertIn("'@cmd", csv_text)
        self.assertNotIn(",@cmd", csv_text)


@pytest.mark.slow
class EvaluateAfterFinetuneTestCase(LiveWorkerTestCase):
    def test_a_fine_tune_queues_teacher_base_and_student_and_a_collapsed_student_is_flagged(
        self,
    ) -> None:
        trainset = self.make_trainset(reviews(24), dev_every=2)  # 12 dev rows
        run = self.make_run(status="succeeded", trainset=trainset)
        for i in range(0, 24, 2):  # one-label traces: the teacher "answered" positive to all
            trace = self.make_trace(run, i)
            trace.outputs = {"sentiment": "positive"}
            for call in trace.calls:
                call["outputs"] = {"sentiment": "positive"}
            trace.save()
        student = self.make_model("student", max_tokens=24)
        job = finetunes.create_finetune_job(
            run=run,
            student=student,
            config=FinetuneConfig(
                base_model="smollm2", max_steps=12, batch_size=2, learning_rate=1e-3, bf16=False
            ),
            selection="passing",
            user=self.bob,
            evaluate_when_done=True,
        )
        self.start_worker()
        self.wait_until_terminal(job)
        self.assertEqual(job.status, FinetuneJob.Status.SUCCEEDED, job.error)
        evaluation = Evaluation.objects.get(finetune_job=job)
        self.wait_until_terminal(evaluation)
        self.assertEqual(evaluation.status, "succeeded", evaluation.error)
        roles = list(evaluation.candidates.values_list("role", "language_model__name"))
        self.assertEqual(
            roles,
            [("teacher", "teacher"), ("base", "student"), ("student", f"student ft-{job.pk}")],
        )
        for candidate in evaluation.candidates.all():
            self.assertEqual(candidate.results.count(), 12, candidate.error)
        comparison = comparisons.compare(evaluation)
        student_summary = comparison.summaries[2]
        self.assertTrue(student_summary.collapsed, student_summary.answers)
        self.assertIn("'positive'", student_summary.warning or "")
        self.assertEqual(evaluation.verdict, comparison.verdict())
        self.assertTrue(evaluation.verdict["candidates"][2]["collapsed"])
        self.assertIn("student", evaluation.verdict["student_vs_teacher"])
        # the comparison page shows the three candidates and the collapsed student's warning
        self.client.force_login(self.bob)
        page = self.client.get(f"/p/{run.project.slug}/evaluations/{evaluation.pk}/")
        self.assertContains(page, f"student ft-{job.pk}")
        self.assertContains(page, "Teacher")
        self.assertContains(page, "Base student")
        student_candidate = evaluation.candidates.get(role="student")
        self.assertContains(page, f'id="collapsed-{student_candidate.pk}"')
