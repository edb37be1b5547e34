from __future__ import annotations

from jobs.engine.types import FinetuneConfig
from jobs.models import FinetuneJob, FinetuneMetric, Membership, TrainsetRow
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
