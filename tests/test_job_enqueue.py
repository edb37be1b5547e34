from __future__ import annotations

from datetime import timedelta
from unittest import mock

from django.conf import settings
from django.utils.timezone import now
from rq import SimpleWorker
from rq.job import Job, JobStatus

from jobs.engine.types import BootstrapConfig, FinetuneConfig, MetricSpec
from jobs.models import BootstrapRun, FinetuneJob
from jobs.services import finetunes, queue, runs
from tests.base import BaseTestCase


class FinetuneEnqueueTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.bootstrap_run = self.make_run(status="succeeded")
        self.student = self.make_model("student")
        for i in range(4):
            self.make_trace(
                self.bootstrap_run, i, review_state="approved" if i < 2 else "unreviewed"
            )

    def create(self, **kwargs) -> FinetuneJob:
        kwargs.setdefault("run", self.bootstrap_run)
        kwargs.setdefault("student", self.student)
        kwargs.setdefault("config", FinetuneConfig(base_model="ignored", max_steps=2))
        kwargs.setdefault("selection", "approved")
        kwargs.setdefault("multitask", True)
        kwargs.setdefault("exclude_demos", True)
        return finetunes.create_finetune_job(user=self.bob, **kwargs)

    def test_it_enqueues_after_commit_with_our_id(self) -> None:
        gpu = queue.get_queue("gpu")
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            job = self.create()
            self.assertEqual(gpu.job_ids, [])  # nothing in Redis before the row is committed
        self.assertEqual(len(callbacks), 1)
        callbacks[0]()
        self.assertEqual(gpu.job_ids, [str(job.rq_job_id)])
        rq_job = queue.fetch_rq_job(str(job.rq_job_id))
        self.assertEqual(rq_job.func_name, "jobs.tasks.run_finetune")
        self.assertEqual(rq_job.args, [job.pk])  # stored as JSON
        self.assertEqual(rq_job.timeout, settings.BFT_FINETUNE_TIMEOUT_S)
        self.assertEqual(rq_job.result_ttl, settings.BFT_RQ_RESULT_TTL_S)
        self.assertEqual(rq_job.failure_ttl, settings.BFT_RQ_RESULT_TTL_S)
        from jobs.tasks import on_work_failure

        self.assertIs(rq_job.failure_callback, on_work_failure)
        self.assertEqual(job.finetune_config().base_model, "smollm2")  # always the student's model

    def test_it_never_enqueues_when_the_transaction_rolls_back(self) -> None:
        from django.db import transaction

        with self.captureOnCommitCallbacks(execute=True) as callbacks:
            try:
                with transaction.atomic():
                    self.create()
                    raise RuntimeError("rollback")
            except RuntimeError:
                pass
        self.assertEqual(callbacks, [])
        self.assertEqual(queue.get_queue("gpu").count, 0)
        self.assertFalse(FinetuneJob.objects.exists())

    def test_it_refuses_a_student_that_cannot_fine_tune_here(self) -> None:
        remote = self.make_model("remote", kind="litellm", model_name="openai/gpt-4o-mini")
        with self.assertRaisesMessage(ValueError, "only local models fine-tune"):
            self.create(student=remote)
        frozen = self.make_model("frozen", fine_tunable=False)
        with self.assertRaisesMessage(ValueError, "not marked fine-tunable"):
            self.create(student=frozen)
        other = self.make_model("other", project=self.p2)
        with self.assertRaisesMessage(ValueError, "another project"):
            self.create(student=other)

    def test_it_refuses_an_empty_selection(self) -> None:
        self.bootstrap_run.traces.update(review_state="rejected")
        with self.assertRaisesMessage(ValueError, "No traces to train on"):
            self.create(selection="approved")
        with self.assertRaisesMessage(ValueError, "No traces to train on"):
            self.create(selection="passing")  # rejected traces never train

    def test_it_refuses_a_bad_config(self) -> None:
        with self.assertRaisesMessage(ValueError, "learning_rate"):
            self.create(config=FinetuneConfig(base_model="x", learning_rate=0))

    def test_it_selects_training_traces(self) -> None:
        self.make_trace(self.bootstrap_run, 10, passed=False)
        self.make_trace(self.bootstrap_run, 11, parsed=False, passed=False)
        traces = self.bootstrap_run.traces
        self.assertEqual(traces.for_selection("approved").count(), 2)
        self.assertEqual(traces.for_selection("passing").count(), 4)
        self.assertEqual(traces.for_selection("all").count(), 5)

    def test_it_cancels_a_queued_job_at_once(self) -> None:
        with self.captureOnCommitCallbacks(execute=True):
            job = self.create()
        queue.cancel(row=job, user=self.bob)
        job.refresh_from_db()
        self.assertEqual(job.status, "cancelled")
        self.assertEqual(queue.get_queue("gpu").job_ids, [])
        self.assertEqual(queue.fetch_rq_job(str(job.rq_job_id)).get_status(), "canceled")

    def test_it_asks_a_running_job_to_stop(self) -> None:
        with self.captureOnCommitCallbacks(execute=True):
            job = self.create()
        job.mark_running()
        queue.cancel(row=job, user=self.bob)
        job.refresh_from_db()
        self.assertEqual(job.status, "running")
        self.assertTrue(job.cancel_requested)
        self.assertIsNotNone(job.cancel_requested_at)

    def test_it_retries_the_same_row_under_a_new_rq_id(self) -> None:
        with self.captureOnCommitCallbacks(execute=True):
            job = self.create()
        job.mark_running()
        job.mark_finished("failed", error="boom")
        old = job.rq_job_id
        with self.captureOnCommitCallbacks(execute=True):
            queue.retry(row=job, user=self.bob)
        job.refresh_from_db()
        self.assertEqual(job.status, "queued")
        self.assertNotEqual(job.rq_job_id, old)
        self.assertIn(str(job.rq_job_id), queue.get_queue("gpu").job_ids)
        with self.assertRaisesMessage(ValueError, "Only a failed or cancelled job"):
            queue.retry(row=job, user=self.bob)


class BootstrapEnqueueTestCase(BaseTestCase):
    def test_it_creates_a_run_and_enqueues_it_on_the_default_queue(self) -> None:
        trainset = self.make_trainset(dev_every=4)  # 8 rows: 6 train, 2 dev
        with self.captureOnCommitCallbacks(execute=True):
            run = runs.create_bootstrap_run(
                project=self.p1,
                trainset=trainset,
                program_version=self.make_program(),
                teacher=self.make_model("teacher"),
                metric=MetricSpec("exact_match", "sentiment"),
                config=BootstrapConfig(num_threads=1, limit=5),
                user=self.bob,
            )
        self.assertEqual(run.total, 5)
        self.assertEqual(queue.get_queue("default").job_ids, [str(run.rq_job_id)])
        rq_job = queue.fetch_rq_job(str(run.rq_job_id))
        self.assertEqual(rq_job.func_name, "jobs.tasks.run_bootstrap")
        self.assertEqual(rq_job.timeout, settings.BFT_BOOTSTRAP_TIMEOUT_S)
        examples, demos, skip = runs.bootstrap_inputs(run)
        self.assertEqual([e["index"] for e in examples], [0, 1, 2, 4, 5, 6])  # the train split only
        self.assertEqual(skip, set())

    def test_it_refuses_a_metric_on_an_unknown_field(self) -> None:
        with self.assertRaises(ValueError):
            runs.create_bootstrap_run(
                project=self.p1,
                trainset=self.make_trainset(),
                program_version=self.make_program(),
                teacher=self.make_model("teacher"),
                metric=MetricSpec("exact_match", "nope"),
                config=BootstrapConfig(),
                user=self.bob,
            )
        self.assertFalse(BootstrapRun.objects.exists())


class ReconcileTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.bootstrap_run = self.make_run()

    def enqueue(self) -> Job:
        return queue.get_queue("default").enqueue(
            "jobs.tasks.run_bootstrap",
            self.bootstrap_run.pk,
            job_id=str(self.bootstrap_run.rq_job_id),
        )

    def test_it_fails_a_running_row_whose_rq_job_failed(self) -> None:
        rq_queue = queue.get_queue("default")  # a job that fails without reaching our task code
        rq_queue.enqueue("builtins.int", "not a number", job_id=str(self.bootstrap_run.rq_job_id))
        self.bootstrap_run.mark_running()
        SimpleWorker([rq_queue], connection=self.redis, serializer=rq_queue.serializer).work(
            burst=True
        )
        self.assertEqual(queue.reconcile_stale(), [self.bootstrap_run])
        self.bootstrap_run.refresh_from_db()
        self.assertEqual(self.bootstrap_run.status, "failed")
        self.assertIn("ValueError: invalid literal for int()", self.bootstrap_run.error)

    def test_it_fails_a_running_row_whose_worker_died(self) -> None:
        rq_job = self.enqueue()
        self.bootstrap_run.mark_running()
        rq_job.set_status(JobStatus.STARTED)
        rq_job.worker_name = "gone-worker"
        rq_job.save()
        queue.reconcile_stale()
        self.bootstrap_run.refresh_from_db()
        self.assertEqual(self.bootstrap_run.status, "failed")
        self.assertIn("gone-worker died", self.bootstrap_run.error)

    def test_it_fails_a_row_whose_rq_job_vanished_after_a_grace_period(self) -> None:
        self.bootstrap_run.mark_running()
        self.assertEqual(queue.reconcile_stale(), [])  # just enqueued: give it a moment
        BootstrapRun.objects.filter(pk=self.bootstrap_run.pk).update(
            updated=now() - timedelta(minutes=5)
        )
        queue.reconcile_stale()
        self.bootstrap_run.refresh_from_db()
        self.assertEqual(self.bootstrap_run.status, "failed")
        self.assertIn("no longer exists", self.bootstrap_run.error)

    def test_it_stops_the_horse_hard_after_the_cancel_grace_period(self) -> None:
        rq_job = self.enqueue()
        self.bootstrap_run.mark_running()
        rq_job.set_status(JobStatus.STARTED)
        queue.cancel(row=self.bootstrap_run)
        with mock.patch("jobs.services.queue.send_stop_job_command") as stop:
            queue.reconcile_stale()
            stop.assert_not_called()  # still within the grace period
            BootstrapRun.objects.filter(pk=self.bootstrap_run.pk).update(
                cancel_requested_at=now() - timedelta(hours=1)
            )
            queue.reconcile_stale()
        stop.assert_called_once_with(mock.ANY, str(self.bootstrap_run.rq_job_id))

    def test_a_hard_stopped_job_ends_cancelled(self) -> None:
        rq_job = self.enqueue()
        self.bootstrap_run.mark_running()
        queue.cancel(row=self.bootstrap_run)
        rq_job.set_status(JobStatus.STOPPED)
        queue.reconcile_stale()
        self.bootstrap_run.refresh_from_db()
        self.assertEqual(self.bootstrap_run.status, "cancelled")
        self.assertIn("hard stop", self.bootstrap_run.error)

    def test_it_leaves_healthy_rows_alone(self) -> None:
        self.enqueue()
        self.assertEqual(queue.reconcile_stale(), [])
        self.bootstrap_run.refresh_from_db()
        self.assertEqual(self.bootstrap_run.status, "queued")


class QueueHealthTestCase(BaseTestCase):
    def test_it_reports_queue_lengths(self) -> None:
        queue.get_queue("gpu").enqueue("jobs.tasks.run_finetune", 1)
        health = queue.queue_health()
        self.assertTrue(health.redis_ok)
        self.assertEqual(health.queues, {"default": 0, "gpu": 1})
        self.assertEqual(health.workers, [])

    def test_it_never_raises_when_redis_is_down(self) -> None:
        from jobs.devtools import free_port

        with self.settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
            health = queue.queue_health()
        self.assertFalse(health.redis_ok)
        self.assertIn("Connection", health.error)
