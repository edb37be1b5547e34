"""The README's pipeline script (examples/api_pipeline.py) against a live server, with the worker
that `make run` starts and the bundled model: it prints the fine-tuned model id. The project's
webhook hears of the run and the fine-tune ending, signed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.test import LiveServerTestCase, override_settings

from jobs.models import BootstrapRun, FinetuneJob, WebhookDelivery
from jobs.services import api_keys, webhooks
from tests.base import DEMO_DIR
from tests.test_api_webhooks import Receiver
from tests.test_worker import RUN_TIMEOUT_S, LiveWorkerTestCase
from tests.workers import ROOT, wait_for

SCRIPT = ROOT / "examples" / "api_pipeline.py"


@pytest.mark.slow
class ApiPipelineTestCase(LiveWorkerTestCase, LiveServerTestCase):
    def test_the_readme_script_distills_through_the_api(self) -> None:
        receiver = Receiver()
        self.addCleanup(receiver.close)
        hosts = f"127.0.0.1:{receiver.port}"
        os.environ["BFT_WEBHOOK_HOSTS"] = hosts  # the worker delivers
        self.addCleanup(os.environ.pop, "BFT_WEBHOOK_HOSTS", None)
        with override_settings(BFT_WEBHOOK_HOSTS=hosts):
            hook = webhooks.create_webhook(project=self.p1, user=self.alice, url=receiver.url)
        _, key = api_keys.create_api_key(
            project=self.p1, user=self.alice, name="pipeline", scope="read_write"
        )
        self.start_worker()
        env = dict(
            os.environ,
            BFTWEB_URL=self.live_server_url,
            BFTWEB_PROJECT="p1",
            BFTWEB_KEY=key,
            # small and quick: 8 examples, random demos, two LoRA steps
            RUN_OPTIONS=json.dumps({"limit": 8, "demo_strategy": "random", "num_threads": 2}),
            # (no closing evaluation here: tests/test_evaluations.py runs one after a fine-tune)
            FINETUNE_OPTIONS=json.dumps(
                {"max_steps": 2, "batch_size": 2, "bf16": False, "evaluate_when_done": False}
            ),
        )
        trainset, program = DEMO_DIR / "sentiment.jsonl", DEMO_DIR / "sentiment_program.json"
        done = subprocess.run(
            [sys.executable, str(SCRIPT), str(trainset), str(program), "sentiment"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=2 * RUN_TIMEOUT_S,
        )
        log = self.worker_log.read_text()[-3000:]
        self.assertEqual(done.returncode, 0, f"{done.stdout}\n{done.stderr}\nworker:\n{log}")
        job = FinetuneJob.objects.get()
        self.assertEqual(done.stdout.strip(), f"bftweb:smollm2:ft-{job.pk}")
        self.assertEqual((job.status, job.step, job.selection), ("succeeded", 2, "passing"))
        run = BootstrapRun.objects.get()
        self.assertEqual((run.status, run.done), ("succeeded", 8))
        assert job.trace_set is not None
        self.assertEqual(job.trace_set.trace_count, run.traces.passing().count())
        # the webhook heard of both, from the worker, signed
        wait_for(
            lambda: WebhookDelivery.objects.filter(status="succeeded").count() == 2,
            timeout=60,
            what="both deliveries",
        )
        events = []
        for headers, body in receiver.requests:
            self.assertTrue(webhooks.verify(hook.secret, body, headers["X-Bftweb-Signature"]))
            events.append(headers["X-Bftweb-Event"])
        self.assertEqual(sorted(events), ["finetune.succeeded", "run.succeeded"])
