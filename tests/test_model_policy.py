"""The Models page as an attacker uses it: a second user who owns a project of their own.

charlie owns p2. He may register models in p2 and press Test; the workers must never send one of
their secrets, reach a server the operator did not allow, read files outside the allowed
directories, or load another project's fine-tuned weights (jobs/services/model_policy.py).
"""

from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings

from jobs.engine.model_store import finetuned_owner, register_finetuned
from jobs.engine.types import BootstrapConfig, FinetuneConfig, MetricSpec
from jobs.models import BootstrapRun, FinetuneJob, LanguageModel, Status
from jobs.services import finetunes, queue, runs
from jobs.services.errors import public_text
from jobs.services.model_policy import ModelPolicyError, model_problems
from tests.base import WorkerTestCase
from tests.web import WebTestCase
from tests.workers import start_worker, stop_process, wait_for

SECRETS = {
    "SECRET_KEY": "django-secret-the-attacker-wants",
    "BFT_KEY_TEST": "sk-allowed-key-for-the-allowed-server",
}


class Listener:
    """A real HTTP server on 127.0.0.1 that answers like an OpenAI chat endpoint and records
    every request it gets (the attacker's server, or an internal service)."""

    def __init__(self, reply: str = "internal reply", status: int = 200) -> None:
        self.requests: list[dict[str, Any]] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                listener.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body.decode()}
                )
                if status != 200:  # a provider's error: a long body naming internals
                    error = {"message": "internal trace " + "/srv/secret/path " * 400}
                    answer = json.dumps({"error": error}).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                answer = json.dumps(
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "gpt-x",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": reply},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def everything_received(self) -> str:
        return json.dumps(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def fake_openai_model(case: Any, name: str, reply: str) -> Listener:
    """A LiteLLM model ``name`` in ``case``'s p1 on a Listener that answers ``reply`` to every
    request, allow-listed and keyed (BFT_KEY_TEST) for the rest of the test; the listener."""
    from django.conf import settings

    listener = Listener(reply=reply)
    case.addCleanup(listener.close)
    allowed = override_settings(
        BFT_LM_API_BASES=[*settings.BFT_LM_API_BASES, f"127.0.0.1:{listener.port}"]
    )
    allowed.enable()
    case.addCleanup(allowed.disable)
    env = environ(BFT_KEY_TEST="sk-test")
    env.__enter__()
    case.addCleanup(env.__exit__, None, None, None)
    case.make_model(
        name,
        kind="litellm",
        model_name="openai/gpt-x",
        api_base=listener.url,
        api_key_env="BFT_KEY_TEST",
        fine_tunable=False,
    )
    return listener


@contextmanager
def environ(**values: str) -> Any:
    old = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def litellm_form(**changes: str) -> dict[str, str]:
    return {
        "name": "exfil",
        "kind": "litellm",
        "model_name": "openai/gpt-x",
        "api_base": "",
        "api_key_env": "",
        "temperature": "0",
        "max_tokens": "16",
        **changes,
    }


# --- the rules -----------------------------------------------------------------------------


class KeyVariableRuleTest(WebTestCase):
    def problems(self, var: str) -> dict[str, str]:
        return model_problems(
            project=self.p2, kind="litellm", model_name="openai/x", api_key_env=var
        )

    def test_the_installations_own_secrets_are_never_keys_even_if_listed(self) -> None:
        with override_settings(BFT_LM_KEY_VARS=["SECRET_KEY", "DATABASE_URL", "REDIS_URL"]):
            for var in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL"):
                self.assertIn("BFT_LM_KEY_VARS", self.problems(var)["api_key_env"], var)

    def test_only_listed_or_prefixed_variables_are_allowed(self) -> None:
        with override_settings(BFT_LM_KEY_VARS=["OPENAI_API_KEY"], BFT_LM_KEY_PREFIX="BFT_KEY_"):
            self.assertEqual(self.problems("OPENAI_API_KEY"), {})
            self.assertEqual(self.problems("BFT_KEY_TOGETHER"), {})
            self.assertEqual(self.problems(""), {})  # LiteLLM's own provider variables
            for var in ("HOME", "PATH", "AWS_SECRET_ACCESS_KEY", "TOGETHER_API_KEY"):
                self.assertIn("not allowed", self.problems(var)["api_key_env"], var)
        with override_settings(BFT_LM_KEY_VARS=[], BFT_LM_KEY_PREFIX=""):
            self.assertIn("BFT_LM_KEY_VARS", self.problems("BFT_KEY_TOGETHER")["api_key_env"])
        self.assertIn("not the key itself", self.problems("sk-abc")["api_key_env"])


class EndpointRuleTest(WebTestCase):
    def problems(self, api_base: str, model_name: str = "openai/x") -> dict[str, str]:
        return model_problems(
            project=self.p2, kind="litellm", model_name=model_name, api_base=api_base
        )

    def test_no_custom_endpoint_is_allowed_by_default(self) -> None:
        for url in ("http://127.0.0.1:6379/", "http://169.254.169.254/latest", "https://x.org"):
            self.assertIn("BFT_LM_API_BASES", self.problems(url)["api_base"], url)
        self.assertEqual(self.problems(""), {})

    @override_settings(BFT_LM_API_BASES=["api.together.xyz", "https://vllm.internal:8000/v1"])
    def test_hosts_and_url_prefixes_match_exactly(self) -> None:
        allowed = [
            "https://api.together.xyz/v1",
            "http://api.together.xyz",
            "https://vllm.internal:8000/v1",
            "https://vllm.internal:8000/v1/",
            "https://vllm.internal:8000/v1/chat",
        ]
        refused = [
            "https://api.together.xyz.evil.org/v1",  # a longer host
            "https://evil.org/api.together.xyz",
            "https://api.together.xyz@evil.org/v1",  # userinfo trick: the host is evil.org
            "https://user:pw@api.together.xyz/v1",  # credentials in the URL
            "http://vllm.internal:8000/v1",  # another scheme
            "https://vllm.internal:8001/v1",  # another port
            "https://vllm.internal:8000/v10",  # a path that only starts alike
            "https://vllm.internal:8000/",
            "file:///etc/passwd",
            "gopher://api.together.xyz/",
        ]
        for url in allowed:
            self.assertEqual(self.problems(url), {}, url)
        for url in refused:
            self.assertIn("api_base", self.problems(url), url)

    def test_providers_that_default_to_a_local_server_need_an_allowed_endpoint(self) -> None:
        self.assertIn("BFT_LM_API_BASES", self.problems("", "ollama/llama3")["model_name"])
        self.assertIn("BFT_LM_API_BASES", self.problems("", "hosted_vllm/m")["model_name"])
        with override_settings(BFT_LM_API_BASES=["127.0.0.1:11434"]):
            self.assertEqual(self.problems("http://127.0.0.1:11434", "ollama/llama3"), {})


class LocalPathRuleTest(WebTestCase):
    def problems(self, name: str) -> dict[str, str]:
        return model_problems(project=self.p2, kind="local", model_name=name)

    def test_local_files_only_from_allowed_directories(self) -> None:
        allowed = self.artifacts / "models-ok"
        (allowed / "qwen").mkdir(parents=True)
        outside = self.artifacts / "outside"
        outside.mkdir()
        (allowed / "escape").symlink_to(outside)  # a link out of the allowed directory
        with override_settings(BFT_LOCAL_MODEL_DIRS=[str(allowed)]):
            self.assertEqual(self.problems(str(allowed / "qwen")), {})
            self.assertEqual(self.problems("smollm2"), {})  # the bundled model
            self.assertEqual(self.problems("HuggingFaceTB/SmolLM2-135M"), {})  # a hub id
            for name in (
                "/etc",
                "/etc/passwd.gguf",
                str(outside),
                str(allowed / "escape"),
                str(allowed / ".." / "outside"),
                "relative/../../etc",
                "~/.ssh",
            ):
                problem = self.problems(name).get("model_name", "")
                self.assertTrue(
                    "BFT_LOCAL_MODEL_DIRS" in problem or "absolute path" in problem, name
                )
                self.assertNotIn(str(allowed), problem)  # the allowed directories are not told

    def test_pages_never_show_where_files_live(self) -> None:
        text = public_text(
            "OSError: /srv/bftweb/var/model-cache/qwen-1 does not appear to have config.json; "
            "see https://huggingface.co/docs/a/b and /home/app/.venv/lib/x.py"
        )
        self.assertNotIn("/srv/bftweb", text)
        self.assertNotIn("/home/app", text)
        self.assertIn("…/qwen-1", text)
        self.assertIn("https://huggingface.co/docs/a/b", text)
        self.assertLessEqual(len(public_text("x" * 5000)), 500)


# --- through the pages and the admin -------------------------------------------------------


class AttackerFormTest(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.listener = Listener()
        self.addCleanup(self.listener.close)

    def test_the_form_refuses_secret_variables_and_unlisted_endpoints(self) -> None:
        self.login(self.charlie)
        for var in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "HOME"):
            r = self.client.post(
                "/p/p2/models/new/",
                litellm_form(api_key_env=var, api_base=self.listener.url),
            )
            self.assertContains(r, "BFT_LM_KEY_VARS", status_code=400)
            self.assertContains(r, "BFT_LM_API_BASES", status_code=400)
        self.assertFalse(LanguageModel.objects.filter(name="exfil").exists())
        self.assertEqual(self.listener.requests, [])

    def test_editing_a_model_goes_through_the_same_rules(self) -> None:
        model = self.make_model("api", project=self.p2, kind="litellm", model_name="openai/x")
        self.login(self.charlie)
        r = self.client.post(
            f"/p/p2/models/{model.pk}/edit/", litellm_form(name="api", api_key_env="SECRET_KEY")
        )
        self.assertContains(r, "BFT_LM_KEY_VARS", status_code=400)
        self.assertEqual(LanguageModel.objects.get(pk=model.pk).api_key_env, "")

    def test_a_refused_model_is_not_tested_even_if_its_row_was_edited(self) -> None:
        model = self.make_model(
            "api",
            project=self.p2,
            kind="litellm",
            model_name="openai/x",
            api_key_env="SECRET_KEY",
            api_base=self.listener.url,
        )
        self.login(self.charlie)
        r = self.client.post(f"/p/p2/models/{model.pk}/test/", headers={"HX-Request": "true"})
        self.assertContains(r, "BFT_LM_KEY_VARS", status_code=400)
        self.assertEqual(self.redis.keys("rq:job:*"), [])  # nothing was queued

    def test_the_admin_refuses_them_too(self) -> None:
        admin = User.objects.create_superuser("root", "root@example.org", "pw")
        client = Client()
        client.force_login(admin)
        data = {
            "project": self.p2.pk,
            "name": "exfil",
            "kind": "litellm",
            "model_name": "openai/gpt-x",
            "api_base": self.listener.url,
            "api_key_env": "DATABASE_URL",
            "temperature": "0",
            "max_tokens": "16",
        }
        r = client.post("/admin/jobs/languagemodel/add/", data)
        self.assertContains(r, "BFT_LM_KEY_VARS")
        self.assertContains(r, "BFT_LM_API_BASES")
        self.assertFalse(LanguageModel.objects.filter(name="exfil").exists())

    def test_the_test_button_says_the_queue_is_unavailable_when_redis_is_down(self) -> None:
        model = self.make_model("smollm2-p2", project=self.p2)
        queues = {name: {"URL": "redis://127.0.0.1:1/0"} for name in ("default", "gpu")}
        self.login(self.charlie)
        with override_settings(RQ_QUEUES=queues):
            r = self.client.post(f"/p/p2/models/{model.pk}/test/", headers={"HX-Request": "true"})
            self.assertContains(r, "queue is unavailable", status_code=503)
            r = self.client.post(f"/p/p2/models/{model.pk}/test/")
            self.assertRedirects(r, "/p/p2/models/", fetch_redirect_response=False)
            self.assertContains(self.client.get("/p/p2/models/"), "queue is unavailable")


class FinetunedIdOwnershipTest(WebTestCase):
    """Fine-tuned ids are sequential (bftweb:smollm2:ft-3): guessing one must not give its weights."""

    def setUp(self) -> None:
        super().setUp()
        run = self.make_run()
        self.victim_job = FinetuneJob.objects.create(
            project=self.p1,
            run=run,
            student=run.teacher,
            status=Status.SUCCEEDED,
            output_model_id="bftweb:smollm2:ft-1",
            created_by=self.alice,
        )

    def test_the_form_refuses_another_projects_fine_tuned_id(self) -> None:
        self.login(self.charlie)
        r = self.client.post(
            "/p/p2/models/new/",
            {
                "name": "stolen",
                "kind": "local",
                "model_name": "bftweb:smollm2:ft-1",
                "temperature": "0",
                "max_tokens": "16",
            },
        )
        self.assertContains(r, "No fine-tuned model", status_code=400)
        self.assertFalse(LanguageModel.objects.filter(name="stolen").exists())
        # ... while its own project may register it.
        self.assertEqual(
            model_problems(project=self.p1, kind="local", model_name="bftweb:smollm2:ft-1"), {}
        )

    def test_the_services_refuse_it_for_runs_and_fine_tunes(self) -> None:
        stolen = self.make_model("stolen", project=self.p2, model_name="bftweb:smollm2:ft-1")
        run = self.make_run(  # a run of charlie's project (rows made directly)
            project=self.p2,
            program_version=self.victim_job.run.program_version,
            teacher=self.make_model("t", project=self.p2),
        )
        with self.assertRaisesMessage(ModelPolicyError, "No fine-tuned model"):
            finetunes.check_student(stolen, self.p2)
        with self.assertRaisesMessage(ModelPolicyError, "No fine-tuned model"):
            finetunes.create_finetune_job(
                run=run, student=stolen, config=FinetuneConfig(base_model=""), user=self.charlie
            )
        trainset, version = run.trainset, run.program_version
        for obj in (trainset, version.program):
            type(obj).objects.filter(pk=obj.pk).update(project=self.p2)
        trainset.refresh_from_db()
        version.refresh_from_db()
        with self.assertRaisesMessage(ModelPolicyError, "No fine-tuned model"):
            runs.create_bootstrap_run(
                project=self.p2,
                trainset=trainset,
                program_version=version,
                teacher=stolen,
                metric=MetricSpec("exact_match", "sentiment"),
                config=BootstrapConfig(),
                user=self.charlie,
            )

    def test_the_registry_records_the_owner_and_a_mismatch_is_refused(self) -> None:
        adapter = Path(self.artifacts) / "jobs" / "1" / "adapter"
        register_finetuned(
            "bftweb:smollm2:ft-1",
            base_model="smollm2",
            adapter_dir=adapter,
            manifest={},
            owner=f"project-{self.p2.pk}",  # a registry that disagrees with the database
        )
        self.assertEqual(finetuned_owner("bftweb:smollm2:ft-1"), f"project-{self.p2.pk}")
        problems = model_problems(project=self.p1, kind="local", model_name="bftweb:smollm2:ft-1")
        self.assertIn("No fine-tuned model", problems["model_name"])


# --- the worker: defence in depth ----------------------------------------------------------


@pytest.mark.slow
class WorkerRefusesTest(WorkerTestCase):
    """Rows edited straight in the database and tasks put straight on the queue: the worker
    itself refuses before it calls anything, and a real listener proves nothing reached it."""

    def test_the_worker_sends_no_secret_and_reaches_no_unlisted_server(self) -> None:
        allowed, forbidden, failing = Listener(), Listener(), Listener(status=400)
        self.addCleanup(allowed.close)
        self.addCleanup(forbidden.close)
        self.addCleanup(failing.close)

        def litellm(name: str, var: str, base: str) -> LanguageModel:
            return self.make_model(
                name,
                project=self.p2,
                kind="litellm",
                model_name="openai/gpt-x",
                api_key_env=var,
                api_base=base,
                fine_tunable=False,
            )

        models = {
            "secret": litellm("secret", "SECRET_KEY", allowed.url),
            "database": litellm("database", "DATABASE_URL", allowed.url),
            "unlisted-server": litellm("unlisted-server", "BFT_KEY_TEST", forbidden.url),
            "allowed": litellm("allowed", "BFT_KEY_TEST", allowed.url),
            "failing": litellm("failing", "BFT_KEY_TEST", failing.url),
        }
        stolen = self.make_model("stolen", model_name="bftweb:smollm2:ft-9")  # p1 uses p2's id
        version = self.make_program()
        victim_run = self.make_run(
            project=self.p2, program_version=version, teacher=self.make_model("t", project=self.p2)
        )
        FinetuneJob.objects.create(
            project=self.p2,
            run=victim_run,
            student=victim_run.teacher,
            status=Status.SUCCEEDED,
            output_model_id="bftweb:smollm2:ft-9",
            created_by=self.charlie,
        )
        attack_run = self.make_run(program_version=version, teacher=stolen)
        attack_job = FinetuneJob.objects.create(  # p1 fine-tunes p2's student further
            project=self.p1,
            run=attack_run,
            student=stolen,
            config=FinetuneConfig(base_model=stolen.model_name).to_dict(),
            created_by=self.bob,
        )
        models["stolen"] = stolen
        rq_queue = queue.get_queue("default")
        for model in models.values():
            rq_queue.enqueue("jobs.tasks.run_model_test", model.pk)
        rq_queue.enqueue("jobs.tasks.run_bootstrap", attack_run.pk)
        rq_queue.enqueue("jobs.tasks.run_finetune", attack_job.pk)

        bases = f"127.0.0.1:{allowed.port},127.0.0.1:{failing.port}"
        env = {**SECRETS, "BFT_LM_API_BASES": bases}
        with environ(**env):
            worker = start_worker(Path(self.artifacts) / "worker.log", "default")
        self.addCleanup(stop_process, worker)

        def all_done() -> bool:
            tested = LanguageModel.objects.filter(
                pk__in=[m.pk for m in models.values()], last_test_at__isnull=False
            ).count()
            attack_run.refresh_from_db()
            attack_job.refresh_from_db()
            return tested == len(models) and attack_run.is_terminal and attack_job.is_terminal

        wait_for(all_done, timeout=180, what="the worker to test every model")
        got = {name: LanguageModel.objects.get(pk=m.pk) for name, m in models.items()}

        # The allowed model reached the allowed server with the allowed key: the listener works.
        self.assertEqual(got["allowed"].last_test_error, "")
        self.assertEqual(got["allowed"].last_test_output, "internal reply")
        self.assertEqual(len(allowed.requests), 1)
        auth = allowed.requests[0]["headers"].get("Authorization", "")
        self.assertEqual(auth, f"Bearer {SECRETS['BFT_KEY_TEST']}")
        # Everything else was refused by the worker before any call.
        self.assertIn("BFT_LM_KEY_VARS", got["secret"].last_test_error)
        self.assertIn("BFT_LM_KEY_VARS", got["database"].last_test_error)
        self.assertIn("BFT_LM_API_BASES", got["unlisted-server"].last_test_error)
        self.assertEqual(forbidden.requests, [])
        received = allowed.everything_received() + forbidden.everything_received()
        self.assertNotIn(SECRETS["SECRET_KEY"], received)
        self.assertNotIn("sqlite", received)
        self.assertNotIn("postgres", received)
        self.assertEqual(attack_run.status, Status.FAILED)
        self.assertIn("No fine-tuned model", attack_run.error)
        self.assertEqual(attack_run.traces.count(), 0)
        self.assertFalse(BootstrapRun.objects.filter(status=Status.RUNNING).exists())
        # Another project's fine-tuned id is refused by the Test button's task and the fine-tune
        # worker too, before anything loads its weights.
        self.assertIn("No fine-tuned model", got["stolen"].last_test_error)
        self.assertEqual(got["stolen"].last_test_output, "")
        self.assertEqual((attack_job.status, attack_job.output_model_id), (Status.FAILED, ""))
        self.assertIn("No fine-tuned model", attack_job.error)
        self.assertFalse(attack_job.metrics.exists())
        # A provider's long error body is stored shortened, without the paths it named.
        failed = got["failing"].last_test_error
        self.assertEqual(len(failing.requests), 1)
        self.assertTrue(failed)
        self.assertLessEqual(len(failed), 500)
        self.assertNotIn("/srv/secret/path", failed)
