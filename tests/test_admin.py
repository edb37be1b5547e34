from __future__ import annotations

from django.test import override_settings
from django_rq.settings import get_queues_map

from jobs.engine.types import FinetuneConfig
from jobs.models import FinetuneJob, FinetuneMetric, Membership, TrainsetRow
from jobs.services import queue
from tests.base import BaseTestCase


class AdminTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.alice.is_staff = self.alice.is_superuser = True
        self.alice.save()
        self.bootstrap_run = self.make_run()
        self.trace = self.make_trace(self.bootstrap_run, 0)
        self.job = FinetuneJob.objects.create(
            project=self.p1,
            run=self.bootstrap_run,
            student=self.make_model("student"),
            config=FinetuneConfig(base_model="smollm2").to_dict(),
            created_by=self.alice,
        )
        self.metric = FinetuneMetric.objects.create(job=self.job, step=1, loss=1.5)
        self.objects = [
            self.p1,
            Membership.objects.get(user=self.bob),
            self.bootstrap_run.teacher,
            self.bootstrap_run.trainset,
            TrainsetRow.objects.filter(trainset=self.bootstrap_run.trainset)[0],
            self.bootstrap_run.program_version.program,
            self.bootstrap_run.program_version,
            self.bootstrap_run,
            self.trace,
            self.job,
            self.metric,
        ]

    def test_every_changelist_add_and_change_page_loads(self) -> None:
        self.client.force_login(self.alice)
        for obj in self.objects:
            base = f"/admin/jobs/{obj._meta.model_name}/"
            for url in (base, f"{base}add/", f"{base}{obj.pk}/change/", f"{base}?q=1"):
                with self.subTest(url=url):
                    self.assertEqual(self.client.get(url).status_code, 200)

    def test_the_queue_pages_are_for_staff_only(self) -> None:
        self.client.force_login(self.alice)
        self.assertContains(self.client.get("/admin/rq/"), "gpu")
        self.client.force_login(self.bob)
        r = self.client.get("/admin/rq/")
        self.assertEqual(r.status_code, 302)
        self.assertIn("/admin/login/", r["Location"])

    def test_the_cancel_action_cancels_a_queued_run(self) -> None:
        self.client.force_login(self.alice)
        r = self.client.post(
            "/admin/jobs/bootstraprun/",
            {"action": "cancel", "_selected_action": [self.bootstrap_run.pk]},
        )
        self.assertEqual(r.status_code, 302)
        self.bootstrap_run.refresh_from_db()
        self.assertEqual(self.bootstrap_run.status, "cancelled")


class RqAdminTestCase(BaseTestCase):
    """/admin/rq/ shows every project's jobs: superusers only."""

    def setUp(self) -> None:
        super().setUp()
        self.alice.is_staff = self.alice.is_superuser = True
        self.alice.save()
        self.bob.is_staff = True  # staff (e.g. to read the admin) but no superuser
        self.bob.save()
        rq_queue = queue.get_queue("default")
        rq_queue.enqueue("jobs.tasks.run_bootstrap", 999, job_id="p2-job", description="p2's run")
        self.index = get_queues_map()["default"]
        self.pages = [
            "/admin/rq/",
            f"/admin/rq/queues/{self.index}/",
            f"/admin/rq/queues/{self.index}/p2-job/",
            f"/admin/rq/queues/{self.index}/failed/",
            f"/admin/rq/workers/{self.index}/",
        ]

    def test_a_staff_user_who_is_not_a_superuser_gets_403(self) -> None:
        self.client.force_login(self.bob)
        for url in self.pages:
            with self.subTest(url=url):
                r = self.client.get(url)
                self.assertEqual(r.status_code, 403)
                self.assertNotContains(r, "p2-job", status_code=403)
        r = self.client.post(f"/admin/rq/queues/{self.index}/p2-job/delete/", {"post": "yes"})
        self.assertEqual(r.status_code, 403)
        r = self.client.post(f"/admin/rq/queues/{self.index}/empty/", {"post": "yes"})
        self.assertEqual(r.status_code, 403)
        self.assertEqual(queue.get_queue("default").job_ids, ["p2-job"])
        self.assertEqual(self.client.get("/admin/rq/stats.json").status_code, 401)

    def test_the_signed_out_and_non_staff_go_to_the_login_page(self) -> None:
        for user in (None, self.victor):
            if user is not None:
                self.client.force_login(user)
            for url in self.pages:
                with self.subTest(user=user, url=url):
                    r = self.client.get(url)
                    self.assertEqual(r.status_code, 302)
                    self.assertIn("/admin/login/", r["Location"])

    def test_a_superuser_sees_every_page_and_the_api_token_still_works(self) -> None:
        self.client.force_login(self.alice)
        for url in self.pages:
            with self.subTest(url=url):
                self.assertEqual(self.client.get(url).status_code, 200)
        self.assertContains(self.client.get(f"/admin/rq/queues/{self.index}/"), "p2-job")
        self.assertEqual(self.client.get("/admin/rq/stats.json").status_code, 200)
        self.client.logout()
        with override_settings(RQ_API_TOKEN="s3cretToken"):
            self.client.force_login(self.bob)
            self.assertEqual(self.client.get("/admin/rq/stats.json/s3cretToken/").status_code, 200)
            self.assertEqual(self.client.get("/admin/rq/stats.json/wrong/").status_code, 401)
