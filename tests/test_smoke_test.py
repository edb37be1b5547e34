"""The smoke test: a teacher that answers one label to everything is stopped after the sample,
"checked", with the reason and a forecast, and nothing more is spent; Continue runs the rest.

The teacher is a LiteLLM model on a real HTTP server on 127.0.0.1 that answers every request
"positive" (a fake OpenAI endpoint: no real model can be made to ignore its input on cue). It is
the whole LiteLLM path of a run: allow-listed endpoint, key variable, ChatAdapter parsing.
"""

from __future__ import annotations

from typing import Any

from jobs import tasks
from jobs.engine.types import BootstrapConfig, MetricSpec
from jobs.models import BootstrapRun, LanguageModel, Status
from jobs.services import runs, smoke
from tests.base import BaseTestCase
from tests.test_model_policy import fake_openai_model
from tests.web import WebTestCase

ALWAYS_POSITIVE = "[[ ## sentiment ## ]]\npositive\n\n[[ ## completed ## ]]"


def reviews(n: int) -> list[dict[str, Any]]:
    return [
        {"text": f"review {i}", "sentiment": ["positive", "negative", "neutral", "mixed"][i % 4]}
        for i in range(n)
    ]


class OneLabelTeacherMixin(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.listener = fake_openai_model(self, "one-label", ALWAYS_POSITIVE)
        self.teacher = LanguageModel.objects.get(project=self.p1, name="one-label")

    def queue_run(self, smoke_size: int = 8) -> BootstrapRun:
        with self.captureOnCommitCallbacks(execute=False):
            return runs.create_bootstrap_run(
                project=self.p1,
                trainset=self.make_trainset(reviews(40)),
                program_version=self.make_program(),
                teacher=self.teacher,
                metric=MetricSpec("exact_match", "sentiment"),
                config=BootstrapConfig(num_threads=2, smoke_size=smoke_size),
                user=self.bob,
            )


class SmokeTestStopsTest(OneLabelTeacherMixin):
    def test_a_one_label_teacher_stops_checked_after_the_sample_and_continue_runs_the_rest(
        self,
    ) -> None:
        run = self.queue_run(smoke_size=8)
        self.assertEqual(tasks.run_bootstrap(run.pk), Status.CHECKED)
        run.refresh_from_db()
        self.assertEqual(run.status, "checked")
        # nothing more was spent: one teacher call per sample example, no more traces
        self.assertEqual(len(self.listener.requests), 8)
        self.assertEqual(run.traces.count(), 8)
        self.assertEqual(run.done, 8)
        labels = sorted(run.traces.values_list("labels__sentiment", flat=True))
        self.assertEqual(labels, sorted(["positive", "negative", "neutral", "mixed"] * 2))
        problems = " ".join(run.smoke["problems"])
        self.assertIn("answered 'positive' for 100% of the sample", problems)
        forecast = run.smoke["forecast"]
        self.assertEqual(
            (forecast["examples"], forecast["kept"], forecast["lm_calls"]), (40, 10, 40)
        )
        self.assertLessEqual(forecast["kept_low"], 10)
        self.assertGreaterEqual(forecast["kept_high"], 10)
        self.assertIsNotNone(forecast["time_s"])
        self.assertFalse(run.is_active or run.is_terminal)

        with self.captureOnCommitCallbacks(execute=False):
            runs.continue_run(row=run, user=self.bob)
        run.refresh_from_db()
        self.assertEqual((run.status, run.smoke["continued_by"]), ("queued", "bob"))
        self.assertEqual(tasks.run_bootstrap(run.pk), Status.SUCCEEDED)
        run.refresh_from_db()
        self.assertEqual((run.done, run.traces.count()), (40, 40))
        self.assertEqual(len(self.listener.requests), 40)  # the sample was not asked again

    def test_a_sound_sample_goes_on_in_the_same_job(self) -> None:
        records = [
            {
                "passed": i % 2 == 0,
                "parsed": True,
                "outputs": {"sentiment": label},
                "labels": {"sentiment": label},
                "lm_calls": 1,
                "tokens": 30,
            }
            for i, label in enumerate(["a", "b", "c", "d"] * 4)
        ]
        found = smoke.figures(records, label_field="sentiment", total=100, elapsed_s=8.0)
        self.assertEqual(found["problems"], [])
        self.assertEqual(found["forecast"]["kept"], 50)
        self.assertEqual(found["forecast"]["time_s"], 50)
        unparsed = [{**r, "parsed": False, "passed": False} for r in records]
        self.assertIn(
            "16 of 16 sample answers did not parse",
            " ".join(
                smoke.figures(unparsed, label_field="sentiment", total=100, elapsed_s=1)["problems"]
            ),
        )

    def test_a_cancel_of_a_checked_run_ends_it(self) -> None:
        from jobs.services import queue

        run = self.queue_run()
        tasks.run_bootstrap(run.pk)
        queue.cancel(row=BootstrapRun.objects.get(pk=run.pk))
        run.refresh_from_db()
        self.assertEqual(run.status, "cancelled")
        self.assertEqual(len(self.listener.requests), 8)


class SmokeTestPageTest(OneLabelTeacherMixin, WebTestCase):
    def test_the_run_page_shows_why_and_offers_continue_to_operators_only(self) -> None:
        run = self.queue_run()
        tasks.run_bootstrap(run.pk)
        self.login(self.victor)
        page = self.client.get(f"/p/p1/runs/{run.pk}/")
        self.assertContains(page, "look broken")
        self.assertContains(page, "answered &#x27;positive&#x27;")
        self.assertNotContains(page, 'id="run-continue"')
        self.assertEqual(self.client.post(f"/p/p1/runs/{run.pk}/continue/").status_code, 403)
        self.login(self.bob)
        page = self.client.get(f"/p/p1/runs/{run.pk}/")
        self.assertContains(page, 'id="run-continue"')
        self.assertContains(page, f"/p/p1/runs/new/?from={run.pk}")
        form = self.client.get(f"/p/p1/runs/new/?from={run.pk}")
        self.assertContains(form, 'name="smoke_size" value="8"')
        with self.captureOnCommitCallbacks(execute=False):
            self.client.post(f"/p/p1/runs/{run.pk}/continue/")
        run.refresh_from_db()
        self.assertEqual(run.status, "queued")
