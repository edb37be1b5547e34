from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from jobs.models import BootstrapRun, FinetuneJob, LanguageModel, Trainset
from tests.base import DEMO_DIR, BaseTestCase
from tests.test_worker import LiveWorkerTestCase
from tests.workers import ROOT

DEMO_TRAINSET = str(DEMO_DIR / "sentiment.jsonl")
DEMO_PROGRAM = str(DEMO_DIR / "sentiment_program.json")


class DistillArgumentsTestCase(BaseTestCase):
    def distill(self, *args: str) -> str:
        with self.assertRaises(CommandError) as ctx:
            call_command("distill", *args, stdout=io.StringIO())
        return str(ctx.exception)

    def write(self, name: str, text: str) -> str:
        path = self.artifacts / name
        path.write_text(text)
        return str(path)

    def test_it_names_a_missing_file(self) -> None:
        message = self.distill("--trainset", "nope.jsonl", "--program", DEMO_PROGRAM)
        self.assertEqual(message, "--trainset nope.jsonl: no such file")

    def test_it_explains_a_bad_metric(self) -> None:
        message = self.distill(
            "--trainset",
            DEMO_TRAINSET,
            "--program",
            DEMO_PROGRAM,
            "--metric",
            "exact_match:sentiment:high",
        )
        self.assertIn("the threshold 'high' is not a number", message)
        message = self.distill(
            "--trainset",
            DEMO_TRAINSET,
            "--program",
            DEMO_PROGRAM,
            "--metric",
            "telepathy:sentiment",
        )
        self.assertIn("telepathy", message)
        message = self.distill(
            "--trainset", DEMO_TRAINSET, "--program", DEMO_PROGRAM, "--metric", "exact_match:mood"
        )
        self.assertIn("mood", message)
        self.assertFalse(BootstrapRun.objects.exists())

    def test_it_explains_a_bad_program_file(self) -> None:
        program = self.write("bad.json", '{"name": "x", "modules": []}')
        self.assertIn("modules", self.distill("--trainset", DEMO_TRAINSET, "--program", program))

    def test_it_explains_a_bad_trainset_file_and_imports_nothing(self) -> None:
        trainset = self.write("bad.jsonl", '{"text": "ok", "sentiment": "positive"}\n{not json}\n')
        message = self.distill("--trainset", trainset, "--program", DEMO_PROGRAM)
        self.assertIn("line 2", message)
        self.assertFalse(Trainset.objects.exists())

    def test_it_refuses_a_student_that_cannot_fine_tune(self) -> None:
        LanguageModel.objects.create(
            project=self.p1, name="api", kind="litellm", model_name="openai/gpt-4o-mini"
        )
        message = self.distill(
            "--trainset",
            DEMO_TRAINSET,
            "--program",
            DEMO_PROGRAM,
            "--project",
            "p1",
            "--student",
            "api",
            "--limit",
            "2",
            "--sync",
        )
        self.assertIn("only local models fine-tune", message)

    def test_bad_arguments_exit_non_zero_with_one_line(self) -> None:
        for args in (
            ["--trainset", "nope.jsonl", "--program", DEMO_PROGRAM],
            ["--trainset", DEMO_TRAINSET, "--program", DEMO_PROGRAM, "--limit", "0"],
        ):
            result = subprocess.run(
                [sys.executable, "manage.py", "distill", *args],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
            with self.subTest(args=args):
                self.assertNotEqual(result.returncode, 0)
                self.assertEqual(len(result.stderr.strip().splitlines()[-1:]), 1)
                self.assertRegex(
                    result.stderr,
                    r"(CommandError: --trainset nope.jsonl: no such file|--limit: invalid positive_int value)",
                )


@pytest.mark.slow
class DistillEndToEndTestCase(LiveWorkerTestCase):
    def test_it_distills_the_demo_data_through_the_queue(self) -> None:
        """The CI proof: 16 examples, 1 epoch, the bundled model as teacher and student, the real worker."""
        self.start_worker()
        out = io.StringIO()
        call_command(
            "distill",
            "--trainset",
            DEMO_TRAINSET,
            "--program",
            DEMO_PROGRAM,
            "--limit",
            "16",
            "--epochs",
            "1",
            stdout=out,
        )
        output = out.getvalue()
        job = FinetuneJob.objects.get()
        self.assertEqual(job.status, "succeeded")
        self.assertIn(f"model id: bftweb:smollm2:ft-{job.pk}", output)
        self.assertIn(f"artifact: {Path(job.output_dir) / 'adapter'}", output)
        self.assertIn("bootstrap 16/16", output)
        run = BootstrapRun.objects.get()
        self.assertEqual(
            (run.status, run.traces.count(), run.project.name), ("succeeded", 16, "distill")
        )
        self.assertTrue(
            LanguageModel.objects.filter(model_name=job.output_model_id, source_job=job).exists()
        )
        # everything is recorded where the admin shows it
        self.alice.is_staff = self.alice.is_superuser = True
        self.alice.save()
        self.client.force_login(self.alice)
        self.assertContains(self.client.get("/admin/jobs/finetunejob/"), job.output_model_id)
        self.assertContains(
            self.client.get(f"/admin/jobs/bootstraprun/{run.pk}/change/"), "succeeded"
        )
        self.assertEqual(
            self.client.get(f"/admin/jobs/trace/?run__id__exact={run.pk}").status_code, 200
        )
