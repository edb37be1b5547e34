"""Webhooks: registered through the API (allow-listed hosts only), told with a signed JSON POST
when a run, fine-tune or evaluation ends, delivered by an RQ task with back-off, every try recorded.
The receiver is a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from django.test import override_settings
from rq import SimpleWorker

from jobs.models import FinetuneJob, Status, Webhook, WebhookDelivery
from jobs.services import queue, webhooks
from tests.api_client import READ, WRITE_OK, ApiTestCase

HOOKS = "/api/v1/projects/p1/webhooks/"


class Receiver:
    """An HTTP server on 127.0.0.1 answering each POST with the next of ``statuses`` (then 200)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append((dict(self.headers), body))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/bftweb"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class WebhookApiTestCase(ApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.receiver = Receiver()
        self.addCleanup(self.receiver.close)
        settings = override_settings(
            BFT_WEBHOOK_HOSTS=f"127.0.0.1:{self.receiver.port}",
            BFT_WEBHOOK_BACKOFF_S=0.01,
            BFT_WEBHOOK_ATTEMPTS=3,
            BFT_WEBHOOK_TIMEOUT_S=5,
        )
        settings.enable()
        self.addCleanup(settings.disable)

    def register(self, **payload: Any) -> dict[str, Any]:
        r = self.api("post", HOOKS, {"url": self.receiver.url, **payload})
        self.assertEqual(r.status_code, 201, r.content)
        body: dict[str, Any] = r.json()
        return body

    def work(self) -> None:
        """Run what is queued on "default" in this process (rq's SimpleWorker, burst)."""
        default = queue.get_queue("default")
        SimpleWorker([default], connection=self.redis, serializer=default.serializer).work(
            burst=True
        )

    def end_a_run(self) -> Any:
        run = self.make_run()
        with self.captureOnCommitCallbacks(execute=True):
            r = self.api("post", f"/api/v1/projects/p1/runs/{run.pk}/cancel/")
        self.assertEqual(r.json()["status"], "cancelled")
        return run

    def test_a_host_not_allowed_is_refused_at_registration(self) -> None:
        for url in (
            "http://169.254.169.254/latest",
            "https://example.org/hook",
            "ftp://127.0.0.1/x",
        ):
            with self.subTest(url=url):
                r = self.api("post", HOOKS, {"url": url})
                self.assertEqual(r.status_code, 400)
                self.assertEqual(r.json()["errors"][0]["field"], "url")
        self.assertIn(
            "BFT_WEBHOOK_HOSTS",
            r.json()["detail"]
            + self.api("post", HOOKS, {"url": "https://example.org/x"}).json()["detail"],
        )
        r = self.api("post", HOOKS, {"url": self.receiver.url, "events": ["deploy"]})
        self.assertEqual(r.json()["errors"][0]["field"], "events[0]")
        self.assertFalse(Webhook.objects.exists())

    def test_an_ended_run_is_posted_signed(self) -> None:
        hook = self.register()
        self.assertEqual(len(hook["secret"]), 64)
        run = self.end_a_run()
        delivery = WebhookDelivery.objects.get()
        self.assertEqual((delivery.event, delivery.status), ("run.cancelled", "queued"))
        self.work()
        [(headers, body)] = self.receiver.requests
        self.assertTrue(webhooks.verify(hook["secret"], body, headers["X-Bftweb-Signature"]))
        self.assertFalse(webhooks.verify("another secret", body, headers["X-Bftweb-Signature"]))
        self.assertEqual(headers["X-Bftweb-Event"], "run.cancelled")
        self.assertEqual(headers["X-Bftweb-Delivery"], str(delivery.pk))
        payload = json.loads(body)
        self.assertEqual(payload["event"], "run.cancelled")
        self.assertEqual(payload["project"], "p1")
        self.assertEqual(payload["object"]["id"], run.pk)
        self.assertEqual(payload["object"]["url"], f"/api/v1/projects/p1/runs/{run.pk}/")
        self.assertEqual(self.api("get", payload["object"]["url"]).status_code, 200)
        delivery.refresh_from_db()
        self.assertEqual(
            (delivery.status, delivery.attempts, delivery.response_status), ("succeeded", 1, 200)
        )

    def test_a_failing_receiver_is_retried_with_every_try_recorded(self) -> None:
        self.receiver.statuses = [500, 503]
        hook = self.register()
        self.end_a_run()
        self.work()
        self.assertEqual(len(self.receiver.requests), 3)
        bodies = {body for _headers, body in self.receiver.requests}
        self.assertEqual(len(bodies), 1)  # the same body, the same signature
        delivery = WebhookDelivery.objects.get()
        self.assertEqual((delivery.status, delivery.attempts), ("succeeded", 3))
        r = self.api("get", f"{HOOKS}{hook['id']}/deliveries/")
        [shown] = r.json()["results"]
        self.assertEqual([t["response_status"] for t in shown["tries"]], [500, 503, 200])
        self.assertEqual([t["number"] for t in shown["tries"]], [1, 2, 3])
        self.assertIn("HTTP 500", shown["tries"][0]["error"])

    def test_a_receiver_that_keeps_failing_ends_failed_and_can_be_redelivered(self) -> None:
        self.receiver.statuses = [500, 500, 500]
        hook = self.register()
        self.end_a_run()
        self.work()
        delivery = WebhookDelivery.objects.get()
        self.assertEqual((delivery.status, delivery.attempts), ("failed", 3))
        self.assertIn("No 2xx answer after 3 tries", delivery.error)
        url = f"{HOOKS}{hook['id']}/deliveries/{delivery.pk}/retry/"
        self.assertEqual(self.api("post", url, key="ro").status_code, 403)
        with self.captureOnCommitCallbacks(execute=True):
            r = self.api("post", url)
        self.assertEqual(r.json()["status"], "queued")
        self.work()
        delivery.refresh_from_db()
        self.assertEqual((delivery.status, delivery.attempts), ("succeeded", 4))
        self.assertEqual(len(self.receiver.requests), 4)

    def test_a_host_removed_from_the_allow_list_is_not_posted(self) -> None:
        self.register()
        self.end_a_run()
        with override_settings(BFT_WEBHOOK_HOSTS="example.org"):
            self.work()
        delivery = WebhookDelivery.objects.get()
        self.assertEqual(delivery.status, "failed")
        self.assertIn("BFT_WEBHOOK_HOSTS", delivery.error)
        self.assertEqual(self.receiver.requests, [])

    def test_only_subscribed_kinds_and_projects_hear_of_it(self) -> None:
        self.register(events=["finetune"])
        ended = self.end_a_run()
        self.assertFalse(WebhookDelivery.objects.exists())
        run = self.make_run(
            status="succeeded",
            trainset=ended.trainset,
            program_version=ended.program_version,
            teacher=ended.teacher,
        )
        self.make_trace(run, 0)
        job = FinetuneJob.objects.create(
            project=self.p1,
            run=run,
            student=self.make_model("s"),
            created_by=self.bob,
            status="running",
        )
        with self.captureOnCommitCallbacks(execute=True):
            job.mark_finished(Status.FAILED, error="boom")
        delivery = WebhookDelivery.objects.get()
        self.assertEqual(delivery.event, "finetune.failed")
        self.assertEqual(delivery.payload["object"]["error"], "boom")
        # a rolled-back transition sends nothing
        from django.db import transaction

        job2 = FinetuneJob.objects.create(
            project=self.p1, run=run, student=job.student, created_by=self.bob, status="running"
        )
        with self.captureOnCommitCallbacks(execute=True):
            try:
                with transaction.atomic():
                    job2.mark_finished(Status.SUCCEEDED)
                    raise RuntimeError("rollback")
            except RuntimeError:
                pass
        self.assertEqual(WebhookDelivery.objects.count(), 1)

    def test_keys_and_roles(self) -> None:
        self.assert_keys("get", HOOKS, READ)
        self.assert_keys("post", HOOKS, {**WRITE_OK, "rw": 201}, {"url": self.receiver.url})
        hook = Webhook.objects.get()
        self.assertIsNone(self.api("get", f"{HOOKS}{hook.pk}/", key="ro").json()["secret"])
        self.assertEqual(self.api("get", f"{HOOKS}{hook.pk}/").json()["secret"], hook.secret)
        self.assert_keys("get", f"{HOOKS}{hook.pk}/deliveries/", READ)
        self.assert_keys("delete", f"{HOOKS}{hook.pk}/", {**WRITE_OK, "rw": 204})
        self.assertFalse(Webhook.objects.exists())
