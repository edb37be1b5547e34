"""Tasks called directly with the real engine: the bundled model bootstraps and trains.

RQ is not involved here (tests/test_worker.py runs the same tasks on a real worker, including a
cancel that stops a real fine-tune within one step); these tests check what a task records.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rq.job import Job
from rq.timeouts import JobTimeoutException

from jobs import tasks
from jobs.engine.model_store import finetuned_owner
from jobs.engine.output_files import TRAIN_FILE
from jobs.engine.types import BootstrapConfig, FinetuneConfig
from jobs.models import BootstrapRun, FinetuneJob, LanguageModel
from jobs.services import trace_sets
from jobs.services.model_policy import project_owner_key
from jobs.work import runs
from tests.base import BaseTestCase

TRAIN_SPLIT = [0, 1, 2, 4, 5, 6]  # make_trainset(dev_every=4) puts rows 3 and 7 in dev


def earlier_record(index: int) -> dict:
    """A trace an earlier, interrupted attempt stored (what the engine hands to on_trace)."""
    return {
        "example_index": index,
        "inputs": {"text": f"review {index}"},
        "labels": {"sentiment": "negative"},
        "outputs": {"sentiment": "negative"},
        "calls": [],
        "score": 1.0,
        "passed": True,
        "parsed": True,
        "error": "",
        "lm_calls": 1,
        "tokens": 10,
        "elapsed_s": 0.1,
    }


class RunBootstrapTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        teacher = self.make_model("teacher", max_tokens=24)
        self.bootstrap_run = self.make_run(
            total=6,
            trainset=self.make_trainset(dev_every=4),
            teacher=teacher,
            config=BootstrapConfig(num_threads=3).to_dict(),
        )

    @pytest.mark.slow
    def test_it_stores_each_trace_and_the_counters(self) -> None:
        self.assertEqual(tasks.run_bootstrap(self.bootstrap_run.pk), "succeeded")
        self.bootstrap_run.refresh_from_db()
        self.assertEqual(self.bootstrap_run.status, "succeeded")
        indexes = sorted(self.bootstrap_run.traces.values_list("example_index", flat=True))
        self.assertEqual(indexes, TRAIN_SPLIT)
        self.assertEqual(self.bootstrap_run.done, 6)
        self.assertEqual(
            self.bootstrap_run.passed + self.bootstrap_run.failed + self.bootstrap_run.errored, 6
        )
        # one Predict call per example, parsed or not
        self.assertEqual(self.bootstrap_run.lm_calls, 6)
        self.assertGreater(self.bootstrap_run.tokens, 6 * 24)
        for trace in self.bootstrap_run.traces.all():
            self.assertEqual(trace.inputs, {"text": f"review {trace.example_index}"})
            self.assertEqual(trace.parsed, not trace.error)

    @pytest.mark.slow
    def test_it_skips_finished_examples_when_resumed(self) -> None:
        runs.record_traces(self.bootstrap_run, [earlier_record(0), earlier_record(1)])
        tasks.run_bootstrap(self.bootstrap_run.pk)
        self.assertEqual(
            sorted(self.bootstrap_run.traces.values_list("example_index", flat=True)), TRAIN_SPLIT
        )
        first = self.bootstrap_run.traces.get(example_index=0)
        # the earlier record stays as it was
        self.assertEqual((first.tokens, first.calls), (10, []))

    def test_a_duplicate_record_is_ignored(self) -> None:
        runs.record_traces(self.bootstrap_run, [earlier_record(0)])
        runs.record_traces(
            self.bootstrap_run, [{**earlier_record(0), "passed": False, "tokens": 99}]
        )
        self.assertEqual(self.bootstrap_run.traces.get(example_index=0).tokens, 10)

    def test_it_stops_when_cancelled(self) -> None:
        # asked after the claim
        BootstrapRun.objects.filter(pk=self.bootstrap_run.pk).update(cancel_requested=True)
        self.assertEqual(tasks.run_bootstrap(self.bootstrap_run.pk), "cancelled")
        self.bootstrap_run.refresh_from_db()
        self.assertEqual((self.bootstrap_run.status, self.bootstrap_run.done), ("cancelled", 0))

    def test_it_records_an_unusable_teacher_as_the_run_failure(self) -> None:
        LanguageModel.objects.filter(pk=self.bootstrap_run.teacher_id).update(
            model_name="no-such-model"
        )
        with self.assertRaises(ValueError):
            tasks.run_bootstrap(self.bootstrap_run.pk)
        self.bootstrap_run.refresh_from_db()
        self.assertEqual(self.bootstrap_run.status, "failed")
        self.assertIn("UnknownModelError", self.bootstrap_run.error)
        self.assertIn("no-such-model", self.bootstrap_run.error)

    def test_it_skips_a_run_that_is_no_longer_queued(self) -> None:
        self.bootstrap_run.cancel_if_queued()
        self.assertEqual(tasks.run_bootstrap(self.bootstrap_run.pk), "skipped")
        self.assertFalse(self.bootstrap_run.traces.exists())


class RunFinetuneTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.bootstrap_run = self.make_run(status="succeeded")
        for i in range(4):
            self.make_trace(self.bootstrap_run, i, review_state="approved")
        self.student = self.make_model("student")

    def make_job(self, **config) -> FinetuneJob:
        config = {"base_model": "smollm2", "max_steps": 3, "batch_size": 1, "bf16": False, **config}
        return FinetuneJob.objects.create(
            project=self.p1,
            run=self.bootstrap_run,
            student=self.student,
            trace_set=trace_sets.freeze_trace_set(run=self.bootstrap_run, user=self.bob),
            config=FinetuneConfig(**config).to_dict(),
            created_by=self.bob,
        )

    @pytest.mark.slow
    def test_it_trains_records_progress_and_registers_the_output_model(self) -> None:
        job = self.make_job()
        model_id = tasks.run_finetune(job.pk)
        job.refresh_from_db()
        self.assertEqual(model_id, f"bftweb:smollm2:ft-{job.pk}")
        self.assertEqual((job.status, job.step, job.total_steps), ("succeeded", 3, 3))
        self.assertEqual(job.checkpoint_step, 3)
        self.assertEqual(job.output_model_id, model_id)
        # the registry records whose it is: only this project may use it
        self.assertEqual(finetuned_owner(model_id), project_owner_key(job.project))
        self.assertEqual(job.output_dir, str(self.artifacts / "jobs" / str(job.pk)))
        self.assertEqual(job.train_rows, 4)
        self.assertTrue(job.worker_name)
        self.assertEqual(job.device, "cpu")
        self.assertIn("step 3/3", job.log_tail)
        # The worker wrote the compiled program on success: the first download needs no export.
        program = json.loads((Path(job.output_dir) / "program.json").read_text())
        self.assertEqual(program["bftweb"]["model_id"], model_id)
        self.assertEqual(program["bftweb"]["model"]["name"], model_id)
        steps = list(job.metrics.values_list("step", "loss"))
        self.assertEqual([s for s, _ in steps], [1, 2, 3])
        self.assertTrue(all(loss is not None and loss > 0 for _, loss in steps))
        output = LanguageModel.objects.get(source_job=job)
        self.assertEqual(
            (output.project, output.kind, output.model_name, output.fine_tunable),
            (self.p1, "local", model_id, True),
        )
        rows = (self.artifacts / "jobs" / str(job.pk) / TRAIN_FILE).read_text().splitlines()
        self.assertEqual(len(rows), 4)
        self.assertIn("messages", json.loads(rows[0]))
        self.assertTrue(
            (self.artifacts / "jobs" / str(job.pk) / "adapter" / "adapter_config.json").exists()
        )

    @pytest.mark.slow
    def test_it_records_an_engine_failure_and_reraises(self) -> None:
        job = self.make_job(target_modules=("no_such_proj",))
        with self.assertRaises(ValueError):
            tasks.run_finetune(job.pk)
        job.refresh_from_db()
        self.assertEqual(job.status, "failed")
        self.assertIn("no_such_proj", job.error)
        self.assertIn("failed: ValueError", job.log_tail)

    def test_the_failure_callback_marks_timeouts_failed(self) -> None:
        job = self.make_job()
        job.mark_running()
        rq_job = Job.create(
            "jobs.tasks.run_finetune", args=(job.pk,), id=str(job.rq_job_id), connection=self.redis
        )
        exc = JobTimeoutException("Task exceeded maximum timeout value (10 seconds)")
        tasks.on_work_failure(rq_job, self.redis, JobTimeoutException, exc, None)
        job.refresh_from_db()
        self.assertEqual(job.status, "failed")
        self.assertIn("exceeded maximum timeout", job.error)


@pytest.mark.slow
class RunModelTestTestCase(BaseTestCase):
    def test_it_stores_the_answer_or_the_error(self) -> None:
        model = self.make_model("m", max_tokens=12)
        tasks.run_model_test(model.pk)
        model.refresh_from_db()
        self.assertTrue(model.last_test_output.strip())
        self.assertEqual(model.last_test_error, "")
        self.assertIsNotNone(model.last_test_at)
        LanguageModel.objects.filter(pk=model.pk).update(model_name="no-such-model")
        tasks.run_model_test(model.pk)
        model.refresh_from_db()
        self.assertEqual(model.last_test_output, "")
        self.assertIn("no-such-model", model.last_test_error)
