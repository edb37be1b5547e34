"""The live bootstrap run page: counters, rate, newest traces, polling that stops, cancel and retry."""

from __future__ import annotations

from datetime import timedelta

from django.utils.timezone import now

from jobs.models import BootstrapRun, Trace
from jobs.services import queue, runs
from tests.web import READ_ALL, WebTestCase


class RunLiveBase(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.bootstrap_run = self.make_run(
            status="running", started=now() - timedelta(seconds=30), total=8
        )
        for i in range(3):
            self.make_trace(self.bootstrap_run, i, passed=i != 1)
        runs.refresh_run_counts(self.bootstrap_run)
        self.bootstrap_run.refresh_from_db()
        self.url = f"/p/p1/runs/{self.bootstrap_run.pk}/"
        self.status_url = f"{self.url}status/"

    def poll(self, user=None):
        self.login(user or self.victor)
        return self.client.get(self.status_url, headers={"HX-Request": "true"})


class RunStatusTestCase(RunLiveBase):
    def test_it_keeps_polling_while_running_and_shows_the_counters(self) -> None:
        r = self.poll()
        self.assertContains(r, "hx-trigger=\"every 2s [document.visibilityState === 'visible']\"")
        self.assertContains(r, f'hx-get="/p/p1/runs/{self.bootstrap_run.pk}/status/"')
        self.assertNotContains(r, "<html")
        self.assertContains(r, '<span class="badge running" id="run-status">Running</span>')
        self.assertContains(r, '<strong id="run-done">3/8</strong>')
        self.assertContains(r, '<strong id="run-passed">2</strong>')
        self.assertContains(r, '<strong id="run-failed">1</strong>')
        self.assertContains(r, "67%")  # pass rate
        self.assertContains(r, 'value="38"')  # 3 of 8
        self.assertContains(r, "examples/s")
        self.assertContains(r, "left")  # an ETA
        self.assertContains(r, "Traces are still arriving")  # no counting queries while polling

    def test_the_counters_move_as_traces_arrive(self) -> None:
        self.make_trace(self.bootstrap_run, 3)
        runs.refresh_run_counts(self.bootstrap_run)
        r = self.poll()
        self.assertContains(r, '<strong id="run-done">4/8</strong>')
        self.assertContains(r, "review 3")  # the newest trace is listed

    def test_it_lists_the_newest_traces_first_and_escaped(self) -> None:
        Trace.objects.filter(run=self.bootstrap_run, example_index=2).update(
            inputs={"text": "<img src=x onerror=alert(1)>"},
            error="ValueError: <b>bad</b>",
            passed=False,
        )
        r = self.poll()
        content = r.content.decode()
        self.assertLess(content.index("review 1"), content.index("review 0"))
        self.assertIn("&lt;img src=x onerror=alert(1)&gt;", content)
        self.assertNotIn("<img src=x", content)
        self.assertIn('title="ValueError: &lt;b&gt;bad&lt;/b&gt;"', content)
        trace = self.bootstrap_run.traces.get(example_index=2)
        self.assertIn(f"/p/p1/runs/{self.bootstrap_run.pk}/review/{trace.pk}/", content)

    def test_it_stops_polling_once_terminal(self) -> None:
        for status in ("succeeded", "failed", "cancelled"):
            BootstrapRun.objects.filter(pk=self.bootstrap_run.pk).update(
                status=status, finished=now()
            )
            r = self.poll()
            self.assertNotContains(r, "hx-trigger", msg_prefix=status)
            self.assertNotContains(r, "left", msg_prefix=status)  # no ETA once over
            # what a fine-tune could train on, once it is over
            self.assertContains(r, "all parsed 3")

    def test_a_failed_run_shows_its_error_escaped(self) -> None:
        BootstrapRun.objects.filter(pk=self.bootstrap_run.pk).update(
            status="failed", error="boom <script>x</script>"
        )
        r = self.poll()
        self.assertContains(r, "boom &lt;script&gt;x&lt;/script&gt;")
        self.assertNotContains(r, "<script>x")

    def test_the_poll_costs_two_queries_beyond_the_session_and_membership(self) -> None:
        self.login(self.victor)
        self.client.get(self.status_url)
        # session, user, membership, the run, its newest traces.
        with self.assertNumQueries(5):
            self.client.get(self.status_url, headers={"HX-Request": "true"})

    def test_the_page_links_to_the_review_queue(self) -> None:
        self.login(self.victor)
        r = self.client.get(self.url)
        self.assertContains(r, f'href="/p/p1/runs/{self.bootstrap_run.pk}/review/"')
        self.assertContains(r, 'id="run-live"')  # the full page renders the fragment inline


class RunActionsTestCase(RunLiveBase):
    def test_cancel_asks_the_worker_to_stop(self) -> None:
        self.login(self.bob)
        r = self.client.post(f"{self.url}cancel/", headers={"HX-Request": "true"})
        self.assertContains(r, "cancel requested")
        self.bootstrap_run.refresh_from_db()
        self.assertTrue(self.bootstrap_run.cancel_requested)

    def test_retry_keeps_finished_traces_and_queues_again(self) -> None:
        BootstrapRun.objects.filter(pk=self.bootstrap_run.pk).update(
            status="failed", error="worker died", finished=now()
        )
        self.login(self.bob)
        self.assertContains(self.client.get(self.url), "Retry the 5 left")
        with self.captureOnCommitCallbacks(execute=True):
            r = self.client.post(f"{self.url}retry/", headers={"HX-Request": "true"})
        self.assertContains(r, '<span class="badge queued" id="run-status">Queued</span>')
        # (in a test the enqueue waits for the outer transaction; in a request it precedes the render)
        self.assertContains(self.poll(), "1st of 1 in the default queue")
        self.bootstrap_run.refresh_from_db()
        self.assertEqual(self.bootstrap_run.status, "queued")
        self.assertEqual(self.bootstrap_run.traces.count(), 3)
        self.assertEqual(queue.get_queue("default").job_ids, [str(self.bootstrap_run.rq_job_id)])
        examples, _demos, skip = runs.bootstrap_inputs(self.bootstrap_run)
        self.assertEqual(skip, {0, 1, 2})  # the worker skips them

    def test_permissions_and_csrf(self) -> None:
        for url in (self.url, self.status_url):
            self.assert_roles("get", url, READ_ALL)
        for url in (f"{self.url}cancel/", f"{self.url}retry/"):
            self.assert_roles("post", url, {"reviewer": 403, "viewer": 403, "outsider": 404})
        client, token = self.csrf_client(self.bob)
        self.assertEqual(client.post(f"{self.url}cancel/").status_code, 403)
        self.bootstrap_run.refresh_from_db()
        self.assertFalse(self.bootstrap_run.cancel_requested)
        r = client.post(f"{self.url}cancel/", {"csrfmiddlewaretoken": token})
        self.assertRedirects(r, self.url, fetch_redirect_response=False)
        self.bootstrap_run.refresh_from_db()
        self.assertTrue(self.bootstrap_run.cancel_requested)
