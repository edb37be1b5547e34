from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from jobs.engine.types import FinetuneConfig
from jobs.models import (
    BootstrapRun,
    Evaluation,
    EvaluationResult,
    FinetuneJob,
    LanguageModel,
    Membership,
    Program,
    Project,
    Trainset,
)
from jobs.services import comparisons, trace_sets
from tests.base import DEMO_DIR, BaseTestCase, WorkerTestCase
from tests.review_fixtures import make_cot_trace
from tests.test_worker import LiveWorkerTestCase
from tests.workers import ROOT, database_url_for_workers, stop_process, wait_for

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

    @pytest.mark.slow
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

    def assert_nothing_written(self) -> None:
        self.assertFalse(User.objects.filter(username="distill").exists())
        self.assertFalse(Project.objects.filter(name="fresh").exists())
        self.assertFalse(Program.objects.exists())
        self.assertFalse(Trainset.objects.exists())
        self.assertFalse(BootstrapRun.objects.exists())
        self.assertEqual(list(LanguageModel.objects.values_list("name", flat=True)), ["api"])

    def test_it_checks_every_file_and_model_before_writing_anything(self) -> None:
        LanguageModel.objects.create(
            project=self.p1,
            name="api",
            kind="litellm",
            model_name="openai/gpt-4o-mini",
            api_key_env="SECRET_KEY",  # a careless (or hostile) row: the web app's own secret
        )
        trainset = self.write("bad.jsonl", '{"text": "ok", "sentiment": "positive"}\n{oops\n')
        # one run, every problem: the trainset, a model file outside the allowed directories,
        # and (in p1) a model that names a refused key variable
        message = self.distill(
            "--trainset",
            trainset,
            "--program",
            DEMO_PROGRAM,
            "--project",
            "p1",
            "--teacher",
            "api",
            "--student",
            "/etc/passwd",
        )
        self.assertIn("line 2", message)
        self.assertIn("--teacher api: The variable SECRET_KEY is not allowed", message)
        self.assertIn("BFT_LM_KEY_VARS", message)  # it names the setting to change
        self.assertIn("--student /etc/passwd: Local model files must be inside", message)
        self.assert_nothing_written()
        # a project that does not exist yet is not created for a bad metric or a refused model
        for args in (
            ["--metric", "exact_match:mood"],
            ["--teacher", "/etc/passwd"],
            ["--student", "../../models/x.gguf"],
        ):
            with self.subTest(args=args):
                message = self.distill(
                    "--trainset",
                    DEMO_TRAINSET,
                    "--program",
                    DEMO_PROGRAM,
                    "--project",
                    "fresh",
                    *args,
                )
                self.assertTrue(message)
                self.assert_nothing_written()

    def test_a_bad_trainset_shows_its_first_50_errors_and_how_many_more(self) -> None:
        lines = ['{"text": "ok", "sentiment": "positive"}'] + ["{oops"] * 60
        trainset = self.write("bad.jsonl", "\n".join(lines) + "\n")
        message = self.distill("--trainset", trainset, "--program", DEMO_PROGRAM)
        shown = [line for line in message.splitlines() if line.strip().startswith("line ")]
        self.assertEqual(len(shown), 50)
        self.assertTrue(shown[0].strip().startswith("line 2:"), shown[0])
        self.assertTrue(shown[-1].strip().startswith("line 51:"), shown[-1])
        self.assertEqual(message.splitlines()[-1].strip(), "and 10 more")
        self.assertIn("60 problem(s)", message)
        self.assertFalse(Trainset.objects.exists())

    def test_the_web_forms_check_its_options_and_name_the_option(self) -> None:
        """The run is the run form filled in from the options: its limits are the page's."""
        message = self.distill(
            "--trainset", DEMO_TRAINSET, "--program", DEMO_PROGRAM, "--demos", "40", "--sync"
        )
        self.assertIn("--demos: Ensure this value is less than or equal to 32.", message)
        self.assertFalse(Trainset.objects.exists() or BootstrapRun.objects.exists())

    def test_the_default_metric_field_is_the_output_the_trainset_labels(self) -> None:
        """A two-module program whose intermediate output (numbers, operation) has no label: the
        metric defaults to the final answer, which the trainset labels, and is not refused."""
        from jobs.management.commands.distill import file_problems

        program = self.write(
            "two.json",
            json.dumps(
                {
                    "name": "math",
                    "modules": [
                        {
                            "name": "parse",
                            "type": "Predict",
                            "signature": "problem -> numbers, operation",
                        },
                        {
                            "name": "solve",
                            "type": "ChainOfThought",
                            "signature": "numbers, operation -> answer",
                        },
                    ],
                }
            ),
        )
        labelled = self.write("math.jsonl", '{"problem": "2 plus 3", "answer": "5"}\n')
        options = {"program": Path(program), "trainset": Path(labelled), "metric": "exact_match:"}
        problems, metric = file_problems(options)
        self.assertEqual(problems, [])
        assert metric is not None
        self.assertEqual((metric.name, metric.field), ("exact_match", "answer"))
        # an explicit field still wins, and an unlabelled program is still refused clearly
        problems, metric = file_problems({**options, "metric": "exact_match:numbers"})
        self.assertIn("label field 'numbers' is not a trainset field", "; ".join(problems))
        unlabelled = self.write("plain.jsonl", '{"problem": "2 plus 3", "solution": "5"}\n')
        problems, metric = file_problems({**options, "trainset": Path(unlabelled)})
        self.assertIn("label field 'answer' is not a trainset field", "; ".join(problems))


class DistillKnobsTestCase(BaseTestCase):
    """The knobs that matter, with the web forms' defaults; and the refusal of a collapsed set."""

    def options(self, *args: str) -> dict[str, Any]:
        from jobs.management.commands.distill import Command

        parser = Command().create_parser("manage.py", "distill")
        return vars(parser.parse_args(["--trainset", "t", "--program", "p", *args]))

    def test_its_defaults_are_the_web_forms(self) -> None:
        from jobs.forms.runs import BootstrapRunForm

        options = self.options()
        run_form = BootstrapRunForm.base_fields
        for option, field in (
            ("demos", "num_demos"),
            ("demo_strategy", "demo_strategy"),
            ("threads", "num_threads"),
            ("temperature", "temperature"),
            ("retries", "retries"),
            ("retry_temperature", "retry_temperature"),
            ("smoke_size", "smoke_size"),
        ):
            self.assertEqual(options[option], run_form[field].initial, option)
        defaults = FinetuneConfig(base_model="-")
        for name in ("epochs", "learning_rate", "batch_size", "lora_r", "lora_alpha"):
            self.assertEqual(options[name], getattr(defaults, name), name)
        self.assertIsNone(options["epochs"])  # auto: the training plan's rule
        self.assertEqual(options["max_label_share"], trace_sets.DEFAULT_MAX_LABEL_SHARE)
        self.assertFalse(options["force"] or options["no_eval"])
        options = self.options(
            "--threads=2",
            "--temperature=0.7",
            "--epochs=3",
            "--lr=1e-4",
            "--batch-size=2",
            "--lora-r=8",
            "--lora-alpha=16",
            "--max-label-share=0.5",
            "--force",
        )
        self.assertEqual(
            [options[k] for k in ("threads", "temperature", "epochs", "learning_rate")],
            [2, 0.7, 3, 1e-4],
        )
        self.assertEqual(
            [options[k] for k in ("batch_size", "lora_r", "lora_alpha", "max_label_share")],
            [2, 8, 16, 0.5],
        )
        for bad in ("--max-label-share=0", "--max-label-share=1.5", "--temperature=3", "--lr=0"):
            with self.subTest(bad=bad), self.assertRaises(CommandError):
                self.options(bad)

    def collapsed_run(self) -> BootstrapRun:
        """12 passing traces; 'positive' is 10 of them (83 %)."""
        run = self.make_run(status="succeeded")
        for i in range(12):
            make_cot_trace(run, i, label="negative" if i in (3, 7) else "positive")
        return run

    def finetune(self, run: BootstrapRun, *args: str) -> tuple[str, str, FinetuneJob]:
        from jobs.management.commands.distill import Command, finetune_config

        out, err = io.StringIO(), io.StringIO()
        command = Command(stdout=out, stderr=err)
        options = self.options(*args)
        config = finetune_config(options, "smollm2")
        with patch("jobs.management.commands.distill.wait_for"):  # the queued job is not run here
            student = LanguageModel.objects.get_or_create(
                project=run.project,
                name="student",
                defaults={"model_name": "smollm2", "fine_tunable": True, "created_by": self.alice},
            )[0]
            job = command.finetune(options, run, student, self.alice, config)
        return out.getvalue(), err.getvalue(), job

    def test_it_refuses_a_collapsed_set_naming_the_label_and_its_share(self) -> None:
        run = self.collapsed_run()
        with self.assertRaises(CommandError) as ctx:
            self.finetune(run)
        self.assertEqual(
            str(ctx.exception),
            "the passing traces collapsed onto one label: 'positive' is 83% of the sentiment "
            "labels (10 of 12), over 80%; a student trained on them learns to always answer it. "
            "Cap it with --max-label-share 0.5, change the teacher's demos or prompt, or train "
            "anyway with --force",
        )
        self.assertFalse(FinetuneJob.objects.exists())
        self.assertFalse(run.trace_sets.exists())

    def test_force_trains_it_anyway_with_a_warning(self) -> None:
        out, err, job = self.finetune(self.collapsed_run(), "--force")
        self.assertIn("warning: the passing traces collapsed onto one label: 'positive'", err)
        assert job.trace_set is not None
        self.assertEqual(job.trace_set.trace_count, 12)
        # 12 rows, 4 per step: 3 per epoch, auto epochs 8 for 24 steps
        self.assertIn(
            "fine-tune plan: 12 rows, 4 per step: 3 steps per epoch x 8 epochs (auto: at least "
            "24 steps) = 24 optimizer steps",
            out,
        )
        _, err, _ = self.finetune(job.run, "--force", "--epochs", "1")
        self.assertIn("warning: only 3 optimizer steps, under 24", err)

    def test_the_job_evaluates_when_done_unless_no_eval(self) -> None:
        _, _, job = self.finetune(self.collapsed_run(), "--force")
        self.assertTrue(job.evaluate_when_done)
        _, _, job = self.finetune(job.run, "--force", "--no-eval")
        self.assertFalse(job.evaluate_when_done)

    def test_a_cap_balances_the_set_and_is_recorded(self) -> None:
        out, err, job = self.finetune(self.collapsed_run(), "--max-label-share", "0.5")
        self.assertIn("label cap 0.5: leaves out 8 'positive'", out)
        assert job.trace_set is not None
        self.assertEqual(job.trace_set.trace_count, 4)
        self.assertEqual(job.trace_set.rule["balance"]["max_share"], 0.5)
        self.assertEqual(job.config["plan"]["rows"], 4)
        with self.assertRaisesMessage(ValueError, "No label can stay under 10%"):
            self.finetune(job.run, "--max-label-share", "0.1")


class DistillSmokeTestCase(WorkerTestCase):
    """A teacher that answers one label to everything: distill stops after the smoke test's
    sample, naming why, and spends nothing more; --force goes on. The teacher is a LiteLLM model
    on a real HTTP server on 127.0.0.1 that always answers "positive" (tests.test_smoke_test)."""

    def setUp(self) -> None:
        from tests.test_model_policy import fake_openai_model
        from tests.test_smoke_test import ALWAYS_POSITIVE, reviews

        super().setUp()
        self.listener = fake_openai_model(self, "one-label", ALWAYS_POSITIVE)
        self.trainset = self.artifacts / "reviews.jsonl"
        self.trainset.write_text("".join(json.dumps(row) + "\n" for row in reviews(40)))
        self.program = self.artifacts / "program.json"
        self.program.write_text(
            json.dumps(
                {
                    "name": "sentiment",
                    "modules": [
                        {"name": "classify", "type": "Predict", "signature": "text -> sentiment"}
                    ],
                }
            )
        )

    def distill(self, *args: str) -> tuple[str, str]:
        out, err = io.StringIO(), io.StringIO()
        call_command(
            "distill",
            *("--trainset", str(self.trainset), "--program", str(self.program)),
            *("--project", "p1", "--teacher", "one-label", "--sync"),
            *("--demos", "0", "--retries", "0", "--smoke-size", "8"),
            *args,
            stdout=out,
            stderr=err,
        )
        return out.getvalue(), err.getvalue()

    def test_it_stops_after_the_sample_with_the_reason_and_force_goes_on(self) -> None:
        with self.assertRaises(CommandError) as ctx:
            self.distill()
        run = BootstrapRun.objects.get()
        self.assertIn(f"the smoke test stopped run {run.pk}: ", str(ctx.exception))
        self.assertIn("answered 'positive' for 100% of the sample", str(ctx.exception))
        self.assertIn("or go on anyway with --force", str(ctx.exception))
        self.assertEqual((run.status, run.traces.count()), ("checked", 8))
        self.assertEqual(len(self.listener.requests), 8)  # nothing more was spent
        self.assertFalse(FinetuneJob.objects.exists())

        BootstrapRun.objects.all().delete()
        # --force: the run goes on past the sample; the capped set is then refused (no training
        # here: a 10% cap cannot hold with one label), which shows the bootstrap finished
        with self.assertRaisesMessage(CommandError, "No label can stay under 10%"):
            self.distill("--force", "--max-label-share", "0.1")
        run = BootstrapRun.objects.get()
        train = run.trainset.rows.filter(split="train").count()  # 32 of the 40, 8 are dev
        self.assertEqual((run.status, run.done, run.traces.count()), ("succeeded", train, train))
        self.assertEqual(len(self.listener.requests), 8 + train)  # the sample is not asked again
        self.assertEqual(run.smoke["continued_by"], "")


@pytest.mark.slow
class DistillSignalTestCase(WorkerTestCase):
    """`distill` as a supervisor runs it, in its own process, stopped with SIGTERM."""

    def test_sigterm_cancels_its_run_and_an_existing_user_keeps_its_rights(self) -> None:
        admin = User.objects.create_user("distill", password="admin-pass")
        admin.is_staff = admin.is_superuser = True
        admin.save()
        Membership.objects.create(project=self.p1, user=admin, role=Membership.Role.OWNER)
        env = dict(os.environ, DATABASE_URL=database_url_for_workers(), PYTHONUNBUFFERED="1")
        process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "distill",
                "--trainset",
                DEMO_TRAINSET,
                "--program",
                DEMO_PROGRAM,
                "--project",
                "p1",
                "--limit",
                "4",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            # no worker runs, so the run waits in the queue until the signal
            wait_for(
                lambda: BootstrapRun.objects.exists() or process.poll() is not None,
                timeout=120,
                what="distill to queue its run",
            )
            if process.poll() is not None:
                self.fail(
                    "distill ended before it queued its run: " + "".join(process.communicate())
                )
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=60)
        finally:
            stop_process(process)
        run = BootstrapRun.objects.get()
        self.assertEqual(process.returncode, 1, out + err)
        self.assertIn(f"interrupted: bootstrap run {run.pk} cancelled", err)
        self.assertEqual(run.status, "cancelled")
        admin.refresh_from_db()
        self.assertTrue(admin.is_superuser and admin.is_staff)
        self.assertTrue(admin.check_password("admin-pass"))
        self.assertEqual(Membership.objects.get(user=admin).role, Membership.Role.OWNER)
        self.assertEqual(run.created_by, admin)


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
            # the default demo search and retries cost teacher calls: tested on their own
            *("--demo-strategy", "random", "--retries", "0"),
            stdout=out,
        )
        output = out.getvalue()
        job = FinetuneJob.objects.get()
        self.assertEqual(job.status, "succeeded")
        self.assertIn(f"model id: bftweb:smollm2:ft-{job.pk}", output)
        self.assertIn(f"artifact: {Path(job.output_dir) / 'adapter'}", output)
        self.assertIn("bootstrap 16/16", output)
        # it ends by scoring teacher, base student and student on the dev split, side by side
        evaluation = Evaluation.objects.get(finetune_job=job)
        self.assertEqual(evaluation.status, "succeeded")
        self.assertEqual(
            sorted(evaluation.candidates.values_list("role", flat=True)),
            ["base", "student", "teacher"],
        )
        rows = evaluation.total // 3
        self.assertGreater(rows, 0)
        self.assertEqual(
            EvaluationResult.objects.filter(candidate__evaluation=evaluation).count(), 3 * rows
        )
        self.assertIn(comparisons.compare(evaluation).text_table(), output)
        # the comparison page shows the three candidates (to distill's own operator)
        self.client.force_login(User.objects.get(username="distill"))
        page = self.client.get(f"/p/{evaluation.project.slug}/evaluations/{evaluation.pk}/")
        for candidate in evaluation.candidates.all():
            self.assertContains(page, candidate.language_model.name)
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
