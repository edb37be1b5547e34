"""Re-scoring a finished run offline: a preview of what a new metric keeps and drops, then a new
metric version; earlier scores stay; the teacher is never called."""

from __future__ import annotations

from django.test import override_settings

from jobs.engine.types import MetricSpec
from jobs.models import BootstrapRun
from jobs.services import rescoring, runs
from tests.test_model_policy import Listener
from tests.web import WebTestCase


class RescoreTestCase(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        # A teacher on a real endpoint that counts requests: re-scoring must send none.
        self.listener = Listener()
        self.addCleanup(self.listener.close)
        teacher = self.make_model(
            "remote", kind="litellm", model_name="openai/gpt-x", api_base=self.listener.url
        )
        self.run_ = self.make_run(teacher=teacher, status="succeeded")
        for i in range(6):
            trace = self.make_trace(self.run_, i)
            if i < 2:  # the teacher answered "Positive." where the gold is "positive"
                trace.outputs = {"sentiment": "Positive <3" if i == 0 else "Positive."}
                trace.labels = {"sentiment": "positive"}
                trace.passed, trace.score = False, 0.0
                trace.save()
        runs.refresh_run_counts(self.run_)
        self.run_.refresh_from_db()

    def test_the_preview_names_what_changes_and_writes_nothing(self) -> None:
        preview = rescoring.preview(self.run_, MetricSpec("contains", "sentiment"))
        self.assertEqual((preview.passed_before, preview.passed_after), (4, 6))
        self.assertEqual((preview.newly_kept, preview.newly_dropped), ([0, 1], []))
        self.assertEqual(dict(preview.balance_after)["positive <3"], 1)
        self.run_.refresh_from_db()
        self.assertEqual((self.run_.passed, self.run_.metric_version), (4, 1))
        self.assertEqual(self.listener.requests, [])

    def test_apply_makes_a_new_version_and_keeps_the_old_scores(self) -> None:
        strict = MetricSpec("exact_match", "sentiment", threshold=1.0)
        loose = MetricSpec("normalized_match", "sentiment")
        rescoring.apply(self.run_, loose, self.bob)
        run = BootstrapRun.objects.get(pk=self.run_.pk)
        self.assertEqual((run.metric_version, run.metric, run.passed), (2, loose.to_dict(), 5))
        self.assertEqual(run.metric_history[0]["metric"], strict.to_dict())
        self.assertEqual((run.metric_history[0]["passed"], run.metric_history[0]["by"]), (4, "bob"))
        second = run.traces.get(example_index=1)
        self.assertTrue(second.passed)
        self.assertEqual(second.score_history, [{"version": 1, "score": 0.0, "passed": False}])
        first = run.traces.get(example_index=0)  # "Positive <3" is still not "positive"
        self.assertFalse(first.passed)
        rescoring.apply(run, strict, self.bob)
        second.refresh_from_db()
        self.assertEqual([h["version"] for h in second.score_history], [1, 2])
        self.assertFalse(second.passed)
        self.assertEqual(self.listener.requests, [])

    def test_a_running_run_is_not_rescored(self) -> None:
        BootstrapRun.objects.filter(pk=self.run_.pk).update(status="running")
        with self.assertRaisesMessage(ValueError, "still bootstrapping"):
            rescoring.apply(self.run_, MetricSpec("contains", "sentiment"), self.bob)

    def test_the_page_previews_for_readers_and_applies_for_operators(self) -> None:
        url = f"/p/p1/runs/{self.run_.pk}/rescore/"
        form = {"metric": "contains", "metric_field": "sentiment", "threshold": "1"}
        self.assert_roles("get", url, {"viewer": 200, "operator": 200, "outsider": 404}, data=form)
        self.assert_roles("post", url, {"viewer": 403, "reviewer": 403, "outsider": 404}, data=form)
        self.login(self.victor)
        page = self.client.get(url, form)
        self.assertContains(page, '<strong id="rescore-after">6</strong>', html=False)
        self.assertContains(page, "positive &lt;3")
        self.assertNotContains(page, "positive <3")
        bad = self.client.get(url, {**form, "metric_field": "nope"})
        self.assertContains(bad, "nope")
        self.login(self.bob)
        response = self.client.post(url, form)
        self.assertRedirects(response, f"/p/p1/runs/{self.run_.pk}/", fetch_redirect_response=False)
        self.run_.refresh_from_db()
        self.assertEqual((self.run_.metric_version, self.run_.passed), (2, 6))
        detail = self.client.get(f"/p/p1/runs/{self.run_.pk}/")
        self.assertContains(detail, "Metric v2")
        self.assertEqual(self.listener.requests, [])


@override_settings()
class RescoreCsrfTestCase(WebTestCase):
    def test_the_apply_post_needs_the_csrf_token(self) -> None:
        run = self.make_run(status="succeeded")
        client, token = self.csrf_client(self.bob)
        url = f"/p/p1/runs/{run.pk}/rescore/"
        form = {"metric": "contains", "metric_field": "sentiment", "threshold": "1"}
        self.assertEqual(client.post(url, form).status_code, 403)
        self.assertEqual(client.post(url, {**form, "csrfmiddlewaretoken": token}).status_code, 302)
