"""RQ payloads are JSON: a queued job is stored as JSON, and the worker that `make run` starts
never unpickles a job (a pickled one fails unread) and runs JSON jobs to the end."""

from __future__ import annotations

import json
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from rq import Queue
from rq.serializers import DefaultSerializer, JSONSerializer

from jobs.engine.types import BootstrapConfig, MetricSpec
from jobs.models import BootstrapRun, Trainset, TrainsetImport
from jobs.services import queue, runs, trainsets
from jobs.worker import BftWorker
from tests.base import WorkerTestCase
from tests.workers import start_worker, stop_process, wait_for


class TouchOnUnpickle:
    """A pickle that creates ``path`` when it is unpickled: what an attacker with access to Redis
    would enqueue for a worker that unpickles jobs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.path), "w")


class JsonPayloadTestCase(WorkerTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.worker_log = self.artifacts / "worker.log"
        self.worker: subprocess.Popen[bytes] | None = None

    def tearDown(self) -> None:
        if self.worker is not None:
            stop_process(self.worker)
        super().tearDown()

    def stored_payload(self, rq_job_id: str) -> bytes:
        """The job's function and arguments exactly as Redis holds them."""
        return zlib.decompress(self.redis.hget(f"rq:job:{rq_job_id}", "data"))

    def log(self) -> str:
        return self.worker_log.read_text() if self.worker_log.exists() else ""

    def wait_for_worker(self, predicate: Callable[[], bool], what: str) -> None:
        try:
            wait_for(predicate, timeout=180, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; worker log:\n{self.log()[-3000:]}") from None

    @pytest.mark.slow
    def test_a_queued_run_is_json_and_the_worker_runs_it_and_records_its_failure(self) -> None:
        with self.settings(BFT_BOOTSTRAP_TIMEOUT_S=2):  # fails in the worker, so on_failure runs
            run = runs.create_bootstrap_run(
                project=self.p1,
                trainset=self.make_trainset(),
                program_version=self.make_program(),
                teacher=self.make_model("teacher"),
                metric=MetricSpec("exact_match", "sentiment"),
                config=BootstrapConfig(num_threads=1, limit=2),
                user=self.bob,
            )
        payload = self.stored_payload(str(run.rq_job_id))
        self.assertNotEqual(payload[:1], b"\x80")  # not a pickle
        self.assertEqual(json.loads(payload), ["jobs.tasks.run_bootstrap", None, [run.pk], {}])

        self.worker = start_worker(self.worker_log)
        self.wait_for_worker(
            lambda: BootstrapRun.objects.get(pk=run.pk).is_terminal, "the worker to end the run"
        )
        run.refresh_from_db()
        self.assertEqual(run.status, "failed")
        # Written by the on_failure callback. The horse raises RQ's timeout exception, or, when it
        # sits in C code (a model load on a loaded machine) past the timeout's grace, RQ kills it:
        # either way the failure went through on_failure.
        timed_out = "JobTimeoutException|Work-horse terminated unexpectedly"
        self.assertRegex(run.error, timed_out)
        result = queue.fetch_rq_job(str(run.rq_job_id)).latest_result()
        assert result is not None and result.exc_string is not None
        self.assertRegex(result.exc_string, timed_out)
        self.assertNotIn("DeserializationError", self.log())

    @pytest.mark.slow
    def test_the_worker_never_unpickles_and_runs_json_jobs_to_the_end(self) -> None:
        marker = self.artifacts / "unpickled"
        attack = Queue("default", connection=self.redis, serializer=DefaultSerializer)
        attack.enqueue("builtins.print", TouchOnUnpickle(marker), job_id="attack")
        self.assertFalse(marker.exists())

        rows = b"".join(b'{"text": "r%d", "sentiment": "positive"}\n' % i for i in range(5))
        with override_settings(BFT_TRAINSET_ASYNC_ROWS=1):  # committed, then enqueued
            outcome = trainsets.import_upload(
                project=self.p1,
                user=self.bob,
                upload=SimpleUploadedFile("rows.jsonl", rows),
                name="rows",
                fmt="jsonl",
                skip_bad_rows=False,
                dev_ratio=0.2,
                split_seed=0,
            )
        self.assertTrue(outcome.queued)
        trainset = outcome.trainset
        assert trainset is not None
        work = TrainsetImport.objects.get(trainset=trainset)
        job_id = str(work.rq_job_id)
        self.assertEqual(
            json.loads(self.stored_payload(job_id)),
            ["jobs.tasks.run_trainset_import", None, [work.pk], {}],
        )

        # started as `make run` starts it: rqworker's own --serializer default is pickle
        self.worker = start_worker(self.worker_log, "default")
        self.wait_for_worker(
            lambda: Trainset.objects.get(pk=trainset.pk).status != "importing",
            "the worker to import the trainset",
        )
        trainset.refresh_from_db()
        self.assertEqual((trainset.status, trainset.row_count), ("ready", 5))
        result = queue.fetch_rq_job(job_id).latest_result()
        assert result is not None
        self.assertEqual(result.return_value, "ready")
        # the pickled job came first in the queue: it failed without being unpickled
        self.assertFalse(marker.exists())
        self.assertEqual(queue.fetch_rq_job("attack").get_status(), "failed")

    def test_bft_worker_reads_json_whatever_serializer_it_is_given(self) -> None:
        worker = BftWorker(
            ["default"], connection=self.redis, serializer="rq.serializers.DefaultSerializer"
        )
        self.assertIs(worker.serializer, JSONSerializer)
        self.assertIs(queue.get_queue("gpu").serializer, JSONSerializer)
