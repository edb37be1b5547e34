"""`manage.py evaluate`: models side by side on a trainset's dev rows, the comparison printed.

The two models are LiteLLM models on real HTTP servers on 127.0.0.1 that answer every request
with one fixed label (fake OpenAI endpoints, tests.test_model_policy.Listener): what each answers
is then known, so the printed table can be checked exactly. The evaluation runs through the same
service, task and queue as the web app (``--sync``: in this process).
"""

from __future__ import annotations

import io

from django.core.management import CommandError, call_command

from jobs.models import Evaluation, EvaluationResult
from tests.base import WorkerTestCase
from tests.test_model_policy import fake_openai_model


def answer(label: str) -> str:
    return f"[[ ## sentiment ## ]]\n{label}\n\n[[ ## completed ## ]]"


class EvaluateCommandTestCase(WorkerTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.listeners = {
            label: fake_openai_model(self, f"always-{label}", answer(label))
            for label in ("positive", "negative")
        }
        # 12 rows, every 3rd is dev: 4 dev rows, 3 of them positive
        rows = [
            {"text": f"review {i}", "sentiment": "negative" if i == 5 else "positive"}
            for i in range(12)
        ]
        self.make_trainset(rows, dev_every=3)
        self.make_program()

    def evaluate(self, *args: str) -> str:
        out = io.StringIO()
        call_command("evaluate", "--project", "p1", "--sync", *args, stdout=out)
        return out.getvalue()

    def test_it_scores_each_model_on_the_dev_rows_and_prints_the_table(self) -> None:
        output = self.evaluate(
            "--rows",
            "reviews",
            "--models",
            "always-positive,always-negative",
            "--program",
            "sentiment",
        )
        evaluation = Evaluation.objects.get()
        self.assertEqual(
            (evaluation.status, evaluation.split, evaluation.total), ("succeeded", "dev", 8)
        )
        results = EvaluationResult.objects.filter(candidate__evaluation=evaluation)
        self.assertEqual(results.count(), 8)
        self.assertEqual(len(self.listeners["positive"].requests), 4)  # the dev rows only
        lines = output.splitlines()
        positive = next(line for line in lines if line.startswith("always-positive"))
        negative = next(line for line in lines if line.startswith("always-negative"))
        self.assertIn(" 3/4 ", positive)
        self.assertIn(" 1/4 ", negative)
        self.assertIn("evaluation", output)  # the progress lines came first

    def test_bad_arguments_are_named_and_nothing_is_queued(self) -> None:
        cases = {
            "--project 'nope': no such project": ["--project", "nope"],
            "--models: no model 'gpt-9'": ["--models", "gpt-9"],
            "--rows: no trainset 'other'": ["--rows", "other:dev"],
            "the split must be one of": ["--rows", "reviews:holdout"],
            "--program 'missing': no such program version": ["--program", "missing"],
        }
        for message, override in cases.items():
            args = {"--rows": "reviews", "--models": "always-positive", "--program": "sentiment"}
            args.update({override[0]: override[1]} if override[0] != "--project" else {})
            flat = [part for pair in args.items() for part in pair]
            with self.subTest(message=message), self.assertRaisesMessage(CommandError, message):
                if override[0] == "--project":
                    call_command("evaluate", "--project", "nope", "--sync", *flat)
                else:
                    self.evaluate(*flat)
        self.assertFalse(Evaluation.objects.exists())
