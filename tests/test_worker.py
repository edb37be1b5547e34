"""The queue path for real: Redis, and the worker started exactly as `make run` starts it (a subprocess).

These load the bundled SmolLM2 on CPU: a few examples and a few LoRA steps each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from jobs.engine.types import BootstrapConfig, FinetuneConfig, MetricSpec
from jobs.models import BootstrapRun, FinetuneJob, LanguageModel
from jobs.services import finetunes, queue, runs
from tests.base import DEMO_DIR, WorkerTestCase
from tests.workers import child_pids, pid_alive, start_worker, stop_process, wait_for

RUN_TIMEOUT_S = 600


@pytest.mark.slow
class LiveWorkerTestCase(WorkerTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.worker_log = self.artifacts / "worker.log"
        self.workers: list[subprocess.Popen[bytes]] = []

    def tearDown(self) -> None:
        for worker in self.workers:
            stop_process(worker)
        super().tearDown()

    def start_worker(self):
        worker = start_worker(self.worker_log)
        self.workers.append(worker)
        return worker

    def wait_until_terminal(self, row, timeout: float = RUN_TIMEOUT_S):
        def done():
            row.refresh_from_db()
            return row.is_terminal

        try:
            wait_for(done, timeout=timeout, what=f"{row} to finish")
        except AssertionError:
            raise AssertionError(
                f"{row} did not finish; worker log:\n{self.worker_log.read_text()[-3000:]}"
            ) from None
        return row

    def finetune_job(self, **overrides: Any) -> FinetuneJob:
        run = self.make_run(status="succeeded")
        for i in range(8):
            self.make_trace(run, i)
        config = FinetuneConfig(
            base_model="smollm2", batch_size=1, checkpoint_every_steps=1, bf16=False, **overrides
        )
        return finetunes.create_finetune_job(
            run=run,
            student=self.make_model("student"),
            config=config,
            selection="passing",
            multitask=True,
            exclude_demos=True,
            user=self.bob,
        )


class QueuePathTestCase(LiveWorkerTestCase):
    def test_it_bootstraps_then_fine_tunes_on_the_worker_that_make_run_starts(self) -> None:
        rows = [
            json.loads(line)
            for line in (DEMO_DIR / "sentiment.jsonl").read_text().splitlines()[:12]
        ]
        program = self.make_program(json.loads((DEMO_DIR / "sentiment_program.json").read_text()))
        run = runs.create_bootstrap_run(
            project=self.p1,
            trainset=self.make_trainset(rows),
            program_version=program,
            teacher=self.make_model("teacher", max_tokens=160),
            metric=MetricSpec("exact_match", "sentiment"),
            config=BootstrapConfig(num_threads=2, num_demos=4, limit=4),
            user=self.bob,
        )
        # committed, then enqueued
        self.assertEqual(queue.get_queue("default").job_ids, [str(run.rq_job_id)])
        self.start_worker()
        self.wait_until_terminal(run)
        self.assertEqual(run.status, "succeeded", run.error)
        self.assertEqual((run.done, run.traces.count()), (4, 4))

        job = finetunes.create_finetune_job(
            run=run,
            student=self.make_model("student"),
            config=FinetuneConfig(base_model="smollm2", max_steps=2, batch_size=2, bf16=False),
            selection="all",
            multitask=True,
            exclude_demos=True,
            user=self.bob,
        )
        self.wait_until_terminal(job)
        self.assertEqual(job.status, "succeeded", job.error)
        self.assertEqual((job.step, job.total_steps), (2, 2))
        self.assertEqual(list(job.metrics.values_list("step", flat=True)), [1, 2])
        self.assertEqual(job.device, "cpu")
        self.assertTrue(job.worker_name)
        output = LanguageModel.objects.get(source_job=job)
        self.assertEqual(output.model_name, f"bftweb:smollm2:ft-{job.pk}")
        self.assertTrue((Path(job.output_dir) / "adapter" / "adapter_config.json").exists())
        self.assertNotIn("Work-horse terminated unexpectedly", self.worker_log.read_text())


class CrashAndCancelTestCase(LiveWorkerTestCase):
    def test_a_killed_worker_fails_the_job_and_a_retry_resumes_from_the_checkpoint(self) -> None:
        job = self.finetune_job(max_steps=8)  # progress lands every ~2 s: leave steps to kill it in
        worker = self.start_worker()
        wait_for(
            lambda: FinetuneJob.objects.get(pk=job.pk).step >= 2,
            timeout=RUN_TIMEOUT_S,
            what="two steps",
        )
        horses = child_pids(worker.pid)
        self.assertEqual(len(horses), 1)
        # the worker, mid fine-tune (rq's horse has its own group)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        wait_for(
            lambda: not pid_alive(horses[0]), timeout=10, what="the horse to die with its worker"
        )

        wait_for(
            lambda: queue.reconcile_stale(),
            timeout=60,
            what="reconcile to notice the dead worker",
        )
        job.refresh_from_db()
        self.assertEqual(job.status, "failed")
        self.assertIn("died while running this job", job.error)
        traces_before = set(job.run.traces.values_list("pk", flat=True))

        queue.retry(row=job, user=self.bob)
        self.start_worker()
        self.wait_until_terminal(job)
        self.assertEqual(job.status, "succeeded", job.error)
        manifest = json.loads((Path(job.output_dir) / "manifest.json").read_text())
        self.assertGreaterEqual(manifest["resumed_from_step"], 1)  # not from scratch
        self.assertIn(f"resumed from step {manifest['resumed_from_step']}", job.log_tail)
        self.assertEqual(list(job.metrics.values_list("step", flat=True)), list(range(1, 9)))
        self.assertEqual(set(job.run.traces.values_list("pk", flat=True)), traces_before)

    def test_cancel_stops_a_fine_tune_within_one_step(self) -> None:
        job = self.finetune_job(max_steps=8)
        self.start_worker()
        wait_for(
            lambda: FinetuneJob.objects.get(pk=job.pk).step >= 1,
            timeout=RUN_TIMEOUT_S,
            what="the first step",
        )
        job.refresh_from_db()
        step_at_cancel = job.step
        queue.cancel(row=job, user=self.bob)
        self.wait_until_terminal(job, timeout=120)
        self.assertEqual(job.status, "cancelled")
        self.assertLessEqual(job.step, step_at_cancel + 1)
        self.assertLess(job.step, 8)
        self.assertEqual(job.checkpoint_step, job.step)  # the stop saved a checkpoint at that step
        meta = json.loads((Path(job.output_dir) / "checkpoint" / "meta.json").read_text())
        self.assertEqual(meta["step"], job.step)

    def test_a_timed_out_job_ends_failed_with_the_reason(self) -> None:
        with self.settings(BFT_FINETUNE_TIMEOUT_S=2):
            job = self.finetune_job(max_steps=4)
        self.start_worker()
        self.wait_until_terminal(job, timeout=120)
        self.assertEqual(job.status, "failed")
        self.assertIn("JobTimeoutException", job.error)
        self.assertIn("timeout", job.error)

    def test_a_retried_bootstrap_skips_finished_examples(self) -> None:
        rows = [
            json.loads(line)
            for line in (DEMO_DIR / "sentiment.jsonl").read_text().splitlines()[:12]
        ]
        run = BootstrapRun.objects.create(
            project=self.p1,
            trainset=self.make_trainset(rows),
            program_version=self.make_program(
                json.loads((DEMO_DIR / "sentiment_program.json").read_text())
            ),
            teacher=self.make_model("teacher", max_tokens=160),
            metric=MetricSpec("exact_match", "sentiment").to_dict(),
            config=BootstrapConfig(num_threads=2, num_demos=4, limit=4).to_dict(),
            total=4,
            status="failed",
            error="worker died",
            created_by=self.bob,
        )
        finished = [self.make_trace(run, 0), self.make_trace(run, 1)]
        queue.retry(row=run, user=self.bob)
        self.start_worker()
        self.wait_until_terminal(run)
        self.assertEqual(run.status, "succeeded", run.error)
        self.assertEqual(sorted(run.traces.values_list("example_index", flat=True)), [0, 1, 2, 3])
        for trace in finished:  # untouched: the same rows, not re-run
            self.assertEqual(
                run.traces.get(example_index=trace.example_index).created, trace.created
            )
