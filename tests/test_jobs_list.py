"""The jobs page: every run and fine-tune of the project, filters, and the live workers."""

from __future__ import annotations

import json
import socket
from datetime import timedelta

from django.conf import settings
from django.utils.timezone import now

from bftweb.settings import with_query_defaults
from jobs import devices
from jobs.engine.types import FinetuneConfig
from jobs.models import BootstrapRun, FinetuneJob
from jobs.worker import BftWorker
from tests.test_job_live import dead_redis
from tests.web import READ_ALL, WebTestCase


class JobsListTestCase(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.bootstrap_run = self.make_run(
            status="succeeded",
            done=8,
            started=now() - timedelta(minutes=3),
            finished=now() - timedelta(minutes=1),
        )
        self.other_run = BootstrapRun.objects.create(
            project=self.p1,
            trainset=self.bootstrap_run.trainset,
            program_version=self.bootstrap_run.program_version,
            teacher=self.bootstrap_run.teacher,
            metric=self.bootstrap_run.metric,
            created_by=self.bob,
            status="running",
            done=3,
            total=10,
            started=now() - timedelta(seconds=20),
        )
        self.job = FinetuneJob.objects.create(
            project=self.p1,
            run=self.bootstrap_run,
            student=self.make_model("student"),
            created_by=self.bob,
            config=FinetuneConfig(base_model="smollm2").to_dict(),
            status="failed",
            step=4,
            total_steps=8,
            started=now() - timedelta(seconds=90),
            finished=now() - timedelta(seconds=15),
        )
        self.outsider_run = BootstrapRun.objects.create(
            project=self.p2,
            trainset=self.bootstrap_run.trainset,
            program_version=self.bootstrap_run.program_version,
            teacher=self.bootstrap_run.teacher,
            metric=self.bootstrap_run.metric,
            created_by=self.charlie,
        )

    def test_it_lists_runs_and_jobs_with_state_progress_owner_and_duration(self) -> None:
        self.login(self.victor)
        r = self.client.get("/p/p1/jobs/")
        self.assertContains(r, f'href="/p/p1/runs/{self.bootstrap_run.pk}/"')
        self.assertContains(r, f'href="/p/p1/runs/{self.other_run.pk}/"')
        self.assertContains(r, f'href="/p/p1/jobs/{self.job.pk}/"')
        self.assertNotContains(r, f"run #{self.outsider_run.pk}</a>")
        self.assertContains(r, "3/10 examples")
        self.assertContains(r, "4/8 steps")
        self.assertContains(r, "2 min 00 s")  # the finished run's duration
        self.assertContains(r, "1 min 15 s")  # the job's
        self.assertContains(r, "<td>bob</td>")
        self.assertContains(r, "<td>alice</td>")

    def test_it_filters_by_state_and_kind(self) -> None:
        self.login(self.victor)
        r = self.client.get("/p/p1/jobs/", {"kind": "finetune"})
        self.assertContains(r, f"job #{self.job.pk}</a>")
        self.assertNotContains(r, f"run #{self.bootstrap_run.pk}</a>")
        r = self.client.get("/p/p1/jobs/", {"state": "active"})
        self.assertContains(r, f"run #{self.other_run.pk}</a>")
        self.assertNotContains(r, f"run #{self.bootstrap_run.pk}</a>")
        self.assertNotContains(r, f"job #{self.job.pk}</a>")
        r = self.client.get("/p/p1/jobs/", {"state": "failed", "kind": "run"})
        self.assertContains(r, "Nothing matches these filters")
        # ignored, not an error
        r = self.client.get("/p/p1/jobs/", {"state": "bogus", "kind": "<x>"})
        self.assertContains(r, f"job #{self.job.pk}</a>")

    def test_the_table_polls_while_something_is_active_and_keeps_the_filters(self) -> None:
        self.login(self.victor)
        r = self.client.get("/p/p1/jobs/table/", {"kind": "run"}, headers={"HX-Request": "true"})
        self.assertContains(r, 'hx-get="/p/p1/jobs/table/?kind=run"')
        self.assertContains(r, "hx-trigger")
        BootstrapRun.objects.filter(pk=self.other_run.pk).update(status="succeeded")
        r = self.client.get("/p/p1/jobs/table/", {"kind": "run"}, headers={"HX-Request": "true"})
        self.assertNotContains(r, "hx-trigger")

    def test_the_pages_are_for_members_only(self) -> None:
        for url in ("/p/p1/jobs/", "/p/p1/jobs/table/", "/p/p1/jobs/workers/"):
            self.assert_roles("get", url, READ_ALL)


class WorkersPanelTestCase(WebTestCase):
    def test_a_live_worker_shows_its_queues_and_device_from_its_own_birth_data(self) -> None:
        worker = BftWorker(["default", "gpu"], connection=self.redis, name="box-1")
        worker.device = {"kind": "cuda", "label": "NVIDIA H100 80GB HBM3 (80 GiB)", "gpus": []}
        worker.register_birth()
        self.assertEqual(
            json.loads(self.redis.hget(worker.key, devices.REDIS_FIELD))["kind"], "cuda"
        )
        self.login(self.victor)
        r = self.client.get("/p/p1/jobs/workers/")
        self.assertContains(r, "<code>box-1</code>")
        self.assertContains(r, "default, gpu")
        self.assertContains(r, "NVIDIA H100 80GB HBM3 (80 GiB)")
        self.assertContains(r, "hx-trigger")
        worker.register_death()
        r = self.client.get("/p/p1/jobs/workers/")
        self.assertContains(r, "No worker is alive")

    def test_an_idle_worker_heartbeats_as_often_as_a_busy_one(self) -> None:
        """rq's idle worker blocks for worker_ttl - 15 s (405 s) between heartbeats; ours wakes
        every BFT_WORKER_HEARTBEAT_S, so the jobs page does not call an idle worker dead."""
        worker = BftWorker(["default"], connection=self.redis, worker_ttl=420)
        self.assertEqual(worker.dequeue_timeout, settings.BFT_WORKER_HEARTBEAT_S)

    def test_the_worker_describes_this_machine_without_torch(self) -> None:
        description = devices.describe_device()
        self.assertIn(description["kind"], ("cpu", "cuda"))
        self.assertTrue(description["label"])

    def test_a_redis_that_never_answers_does_not_hang_the_page(self) -> None:
        with socket.create_server(("127.0.0.1", 0), backlog=16) as black_hole:  # never accepts
            url = with_query_defaults(
                f"redis://127.0.0.1:{black_hole.getsockname()[1]}/0", socket_timeout=0.3
            )
            queues = {name: {**conf, "URL": url} for name, conf in settings.RQ_QUEUES.items()}
            self.login(self.victor)
            with self.settings(REDIS_URL=url, RQ_QUEUES=queues):
                self.assertContains(self.client.get("/p/p1/jobs/"), "Queue unavailable")

    def test_redis_down_says_queue_unavailable(self) -> None:
        self.login(self.victor)
        with self.settings(**dead_redis()):
            for url in ("/p/p1/jobs/", "/p/p1/jobs/workers/"):
                self.assertContains(self.client.get(url), "Queue unavailable", msg_prefix=url)
        self.assertTrue(settings.REDIS_URL)
