from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs.models import BootstrapRun, FinetuneJob
from tests.base import BaseTestCase


class StateMachineTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.bootstrap_run = self.make_run()

    def test_it_lets_a_cancel_beat_a_late_worker_claim(self) -> None:
        web, worker = (
            BootstrapRun.objects.get(pk=self.bootstrap_run.pk),
            BootstrapRun.objects.get(pk=self.bootstrap_run.pk),
        )
        self.assertTrue(web.cancel_if_queued())
        self.assertFalse(worker.mark_running())
        self.bootstrap_run.refresh_from_db()
        self.assertEqual(self.bootstrap_run.status, "cancelled")
        self.assertIsNone(self.bootstrap_run.started)

    def test_it_lets_a_worker_claim_beat_a_late_cancel(self) -> None:
        web, worker = (
            BootstrapRun.objects.get(pk=self.bootstrap_run.pk),
            BootstrapRun.objects.get(pk=self.bootstrap_run.pk),
        )
        self.assertTrue(worker.mark_running())
        self.assertFalse(web.cancel_if_queued())
        self.assertTrue(web.request_cancel())  # the worker will stop cooperatively instead
        self.bootstrap_run.refresh_from_db()
        self.assertEqual(self.bootstrap_run.status, "running")
        self.assertTrue(self.bootstrap_run.cancel_requested)
        self.assertTrue(worker.stop_requested())

    def test_it_claims_with_one_conditional_update(self) -> None:
        with CaptureQueriesContext(connection) as queries:
            self.assertTrue(self.bootstrap_run.mark_running())
        self.assertEqual(len(queries), 1)
        sql = queries[0]["sql"]
        self.assertTrue(sql.startswith("UPDATE"), sql)
        self.assertIn('"status" IN', sql)
        self.assertEqual(self.bootstrap_run.status, "running")  # the instance follows

    def test_it_lets_only_one_of_two_workers_claim(self) -> None:
        a, b = (
            BootstrapRun.objects.get(pk=self.bootstrap_run.pk),
            BootstrapRun.objects.get(pk=self.bootstrap_run.pk),
        )
        self.assertEqual([a.mark_running(), b.mark_running()], [True, False])

    def test_it_finishes_only_active_rows(self) -> None:
        self.assertTrue(self.bootstrap_run.mark_running())
        self.assertTrue(self.bootstrap_run.mark_finished("failed", error="boom"))
        # e.g. reconciled before the worker returned
        self.assertFalse(self.bootstrap_run.mark_finished("succeeded"))
        self.bootstrap_run.refresh_from_db()
        self.assertEqual((self.bootstrap_run.status, self.bootstrap_run.error), ("failed", "boom"))
        self.assertIsNotNone(self.bootstrap_run.finished)

    def test_it_retries_only_failed_or_cancelled_rows_under_a_new_rq_id(self) -> None:
        self.assertFalse(self.bootstrap_run.reset_for_retry())  # queued
        self.bootstrap_run.mark_running()
        self.assertFalse(self.bootstrap_run.reset_for_retry())  # running
        self.bootstrap_run.mark_finished("failed", error="boom")
        old_id = self.bootstrap_run.rq_job_id
        self.assertTrue(self.bootstrap_run.reset_for_retry())
        self.bootstrap_run.refresh_from_db()
        self.assertEqual((self.bootstrap_run.status, self.bootstrap_run.error), ("queued", ""))
        self.assertNotEqual(self.bootstrap_run.rq_job_id, old_id)
        self.assertFalse(self.bootstrap_run.cancel_requested)

    def test_it_shares_the_machine_with_finetune_jobs(self) -> None:
        job = FinetuneJob.objects.create(
            project=self.p1,
            run=self.bootstrap_run,
            student=self.make_model("student"),
            created_by=self.alice,
            total_steps=10,
            step=5,
        )
        self.assertEqual(job.percent, 50)
        self.assertTrue(job.mark_running(worker_name="w1"))
        job.refresh_from_db()
        self.assertEqual((job.status, job.worker_name), ("running", "w1"))
        self.assertFalse(job.is_terminal)
