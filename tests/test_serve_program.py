"""The served program file: the compiled program on the model server, loadable by plain DSPy in a
process where bftweb does not exist; the snippet that loads it; the vLLM command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from jobs.engine.programs import parse_program_spec
from jobs.models import FinetuneJob
from jobs.services import artifacts
from tests.base import WorkerTestCase
from tests.serving import ServedModelsMixin
from tests.test_serve_live import LiveServerMixin

TWO_STEPS = {
    "name": "triage",
    "modules": [
        {"name": "classify", "type": "ChainOfThought", "signature": "text -> sentiment"},
        {"name": "explain", "type": "Predict", "signature": "text, sentiment -> why, score: int"},
    ],
}


def plain_python(where: Path) -> Path:
    """A Python that sees the virtualenv's packages (DSPy ...) but not bftweb: a new venv whose
    site-packages lists ours as a plain path, so our editable install's hook never runs."""
    import site

    venv = where / "plain-venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (venv / "lib" / version / "site-packages" / "packages.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n"
    )
    return venv / "bin" / "python"


class ServedProgramTextTestCase(ServedModelsMixin, WorkerTestCase):
    def job(self) -> FinetuneJob:
        return FinetuneJob.objects.get(output_model_id=self.students["A"])

    def test_the_vllm_command_serves_the_adapter_under_the_same_model_id(self) -> None:
        job = self.job()
        job.config = {"lora_r": 48}
        command = artifacts.vllm_command(job)
        self.assertIn(f"unzip bftweb-job-{job.pk}-adapter.zip", command)
        self.assertIn(
            "vllm serve HuggingFaceTB/SmolLM2-135M-Instruct --enable-lora --max-lora-rank 64",
            command,
        )
        self.assertIn(f"--lora-modules {self.students['A']}=./bftweb-job-{job.pk}-adapter", command)
        job.student.model_name = "/srv/models/secret-base"
        self.assertNotIn("secret", artifacts.vllm_command(job))

    @pytest.mark.slow
    def test_the_job_page_offers_the_served_program_its_snippet_and_the_vllm_command(
        self,
    ) -> None:
        job = self.job()
        job.output_dir = str(self.artifacts / "job-output")
        job.save()
        self.client.force_login(self.victor)  # a viewer: downloads are for every member
        with self.settings(BFT_SERVE_URL="http://models.internal:8100/v1"):
            page = self.client.get(f"/p/p1/jobs/{job.pk}/")
            self.assertContains(page, f"/p/p1/jobs/{job.pk}/download/served-program/")
            self.assertContains(page, "http://models.internal:8100/v1")
            self.assertContains(page, 'id="served-snippet"')
            self.assertContains(page, f"{self.students['A']}=./bftweb-job-{job.pk}-adapter")
            response = self.client.get(f"/p/p1/jobs/{job.pk}/download/served-program/")
        self.assertEqual(response.status_code, 200)
        state = json.loads(b"".join(response.streaming_content))  # type: ignore[attr-defined]
        lm = state["classify"]["lm"]
        self.assertEqual(
            (lm["model"], lm["api_base"]),
            (f"openai/{job.output_model_id}", "http://models.internal:8100/v1"),
        )
        self.client.force_login(User.objects.create_user("outsider"))
        self.assertEqual(
            self.client.get(f"/p/p1/jobs/{job.pk}/download/served-program/").status_code, 404
        )

    def test_the_snippet_rebuilds_the_program_in_plain_dspy(self) -> None:
        import dspy

        job = self.job()
        version = job.run.program_version
        version.spec = TWO_STEPS
        version.save()
        snippet = artifacts.served_program_snippet(job)
        self.assertNotIn("jobs", snippet)
        self.assertIn("allow_unsafe_lm_state=True", snippet)
        namespace: dict[str, object] = {}
        exec(compile(snippet.split("program = Program()")[0], "snippet", "exec"), namespace)
        program = namespace["Program"]()  # type: ignore[operator]
        spec = parse_program_spec(TWO_STEPS)
        self.assertEqual([n for n, _ in program.named_predictors()], spec.predictor_names())
        self.assertIn(
            "explain_out = self.explain(text=text, sentiment=classify_out.sentiment)", snippet
        )
        self.assertIn(
            "return dspy.Prediction(sentiment=classify_out.sentiment, why=explain_out.why, "
            "score=explain_out.score)",
            snippet,
        )
        lm = dspy.utils.dummies.DummyLM(
            [
                {"reasoning": "r", "sentiment": "positive"},
                {"why": "because", "score": "3"},
            ]
        )
        with dspy.context(lm=lm):
            self.assertEqual(program(text="hi").score, 3)


@pytest.mark.slow
class ServedProgramLiveTestCase(LiveServerMixin, WorkerTestCase):
    def test_plain_dspy_without_bftweb_gets_the_fine_tuned_answer(self) -> None:
        job = FinetuneJob.objects.get(output_model_id=self.students["A"])
        with self.settings(BFT_SERVE_URL=self.url, BFT_ARTIFACTS_DIR=self.artifacts):
            path = artifacts.served_program_json(job)
            snippet = artifacts.served_program_snippet(job)
        state = json.loads(path.read_text())
        lm = state["classify"]["lm"]
        self.assertEqual((lm["model"], lm["api_base"]), (f"openai/{job.output_model_id}", self.url))
        self.assertNotIn(self.key1, path.read_text())

        elsewhere = self.artifacts / "elsewhere"
        elsewhere.mkdir()
        shutil.copy(path, elsewhere / path.name)
        script = (
            "try:\n"
            "    import jobs\n"
            "except ImportError:\n"
            "    print('no bftweb here')\n"
            "else:\n"
            "    raise SystemExit(f'bftweb is importable: {jobs.__file__}')\n"
            + snippet.replace("program(text='...')", "program(text='I love this movie.').sentiment")
        )
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(elsewhere),
            "BFTWEB_API_KEY": self.key1,
            "DSPY_CACHEDIR": str(elsewhere / "dspy-cache"),
        }
        done = subprocess.run(
            [str(plain_python(self.artifacts)), "-c", script],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        self.assertEqual(done.returncode, 0, done.stderr[-3000:])
        self.assertEqual(
            done.stdout.split(), ["no", "bftweb", "here", "positive"], done.stderr[-2000:]
        )
