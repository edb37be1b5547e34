from __future__ import annotations

from datetime import timedelta

from django.test import override_settings
from django.utils import timezone
from rq import Queue
from rq.serializers import JSONSerializer

from jobs.models import LanguageModel
from jobs.services.language_models import MODEL_TEST_PROMPT
from tests.web import OPERATE, READ_ALL, WebTestCase

LITELLM = {
    "name": "gpt",
    "kind": "litellm",
    "model_name": "openai/gpt-4o-mini",
    "api_base": "",
    "api_key_env": "BFT_KEY_OPENAI",  # allowed by the default key prefix (jobs/services/model_policy.py)
    "temperature": "0.0",
    "max_tokens": "256",
}


class ModelsPageTestCase(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.model = self.make_model("smollm2")

    def test_every_member_sees_the_list_and_outsiders_get_404(self) -> None:
        self.assert_roles("get", "/p/p1/models/", READ_ALL)
        self.login(self.victor)
        r = self.client.get("/p/p1/models/")
        self.assertContains(r, "smollm2")
        self.assertNotContains(r, "Register a model")
        self.assertNotContains(r, "Test</button>")

    def test_only_operators_register_models(self) -> None:
        self.assert_roles("get", "/p/p1/models/new/", OPERATE)
        self.assert_roles(
            "post", "/p/p1/models/new/", {"reviewer": 403, "viewer": 403, "outsider": 404}, LITELLM
        )
        self.assertFalse(LanguageModel.objects.filter(name="gpt").exists())

    @override_settings(BFT_LM_API_BASES=["127.0.0.1:8000"])
    def test_it_registers_a_litellm_model_by_the_name_of_its_key_variable(self) -> None:
        self.login(self.bob)
        r = self.client.get("/p/p1/models/new/")
        self.assertContains(r, "environment variable")
        self.assertNotContains(r, 'type="password"')
        r = self.client.post(
            "/p/p1/models/new/", {**LITELLM, "api_base": "http://127.0.0.1:8000/v1"}
        )
        self.assertRedirects(r, "/p/p1/models/")
        model = LanguageModel.objects.get(name="gpt")
        self.assertEqual(
            (model.kind, model.api_key_env, model.fine_tunable),
            ("litellm", "BFT_KEY_OPENAI", False),
        )
        self.assertEqual(model.to_spec().api_key_env, "BFT_KEY_OPENAI")

    def test_it_refuses_a_key_in_place_of_a_variable_name(self) -> None:
        self.login(self.bob)
        r = self.client.post("/p/p1/models/new/", {**LITELLM, "api_key_env": "sk-abc123secret"})
        self.assertContains(r, "not the key itself", status_code=400)
        self.assertFalse(LanguageModel.objects.filter(name="gpt").exists())

    @override_settings(BFT_LOCAL_MODEL_DIRS=["/models"])
    def test_it_registers_local_models_and_refuses_bad_combinations(self) -> None:
        self.login(self.bob)
        local = {
            "name": "hf",
            "kind": "local",
            "model_name": "/models/qwen",
            "temperature": "0",
            "max_tokens": "128",
            "fine_tunable": "on",
        }
        self.assertRedirects(self.client.post("/p/p1/models/new/", local), "/p/p1/models/")
        self.assertTrue(LanguageModel.objects.get(name="hf").fine_tunable)
        r = self.client.post("/p/p1/models/new/", {**LITELLM, "name": "ft", "fine_tunable": "on"})
        self.assertContains(r, "Only local models can be fine-tuned", status_code=400)
        r = self.client.post("/p/p1/models/new/", {**local, "name": "x", "api_key_env": "KEY"})
        self.assertContains(r, "Only for litellm models", status_code=400)
        r = self.client.post("/p/p1/models/new/", {**local, "name": "smollm2"})
        self.assertContains(r, "already has a model with this name", status_code=400)

    def test_test_button_enqueues_a_model_test_and_the_fragment_polls(self) -> None:
        self.login(self.bob)
        with self.captureOnCommitCallbacks(execute=True):
            r = self.client.post(
                f"/p/p1/models/{self.model.pk}/test/", headers={"HX-Request": "true"}
            )
        self.assertContains(r, "testing…")
        self.assertContains(r, f"/p/p1/models/{self.model.pk}/test/status/?since=")
        self.assertContains(r, 'hx-trigger="every 2s')
        self.assertNotContains(r, "<html")
        queue = Queue("default", connection=self.redis, serializer=JSONSerializer)
        self.assertEqual(len(queue.job_ids), 1)
        job = queue.fetch_job(queue.job_ids[0])
        assert job is not None
        self.assertEqual(job.args, [self.model.pk, MODEL_TEST_PROMPT])  # no prompt typed

    def test_the_test_button_sends_the_prompt_typed(self) -> None:
        self.login(self.bob)
        url = f"/p/p1/models/{self.model.pk}/test/"
        with self.captureOnCommitCallbacks(execute=True):
            self.client.post(url, {"prompt": "  Say hi in French.  "})
        queue = Queue("default", connection=self.redis, serializer=JSONSerializer)
        job = queue.fetch_job(queue.job_ids[0])
        assert job is not None
        self.assertEqual(job.args, [self.model.pk, "Say hi in French."])
        r = self.client.post(url, {"prompt": "x" * 4001}, headers={"HX-Request": "true"})
        self.assertContains(r, "longer than 4,000 characters", status_code=400)
        self.assertEqual(len(queue.job_ids), 1)
        LanguageModel.objects.filter(pk=self.model.pk).update(
            last_test_prompt="Say hi in <b>French</b>.",
            last_test_output="Bonjour",
            last_test_at=timezone.now(),
        )
        page = self.client.get("/p/p1/models/")
        self.assertContains(page, "Prompt: Say hi in &lt;b&gt;French&lt;/b&gt;.")

    def test_the_plain_post_test_redirects_back(self) -> None:
        self.login(self.alice)
        with self.captureOnCommitCallbacks(execute=True):
            r = self.client.post(f"/p/p1/models/{self.model.pk}/test/")
        self.assertRedirects(r, "/p/p1/models/")

    def test_only_operators_may_test_and_outsiders_get_404(self) -> None:
        url = f"/p/p1/models/{self.model.pk}/test/"
        self.assert_roles("post", url, {"reviewer": 403, "viewer": 403, "outsider": 404})

    def test_the_status_fragment_stops_polling_and_escapes_the_answer(self) -> None:
        since = timezone.now()
        self.login(self.bob)
        url = f"/p/p1/models/{self.model.pk}/test/status/"
        r = self.client.get(url, {"since": since.isoformat()}, headers={"HX-Request": "true"})
        self.assertContains(r, "hx-trigger")  # still pending
        LanguageModel.objects.filter(pk=self.model.pk).update(
            last_test_output="<script>alert(1)</script>", last_test_at=since + timedelta(seconds=1)
        )
        r = self.client.get(url, {"since": since.isoformat()}, headers={"HX-Request": "true"})
        self.assertNotContains(r, "hx-trigger")
        self.assertContains(r, "&lt;script&gt;alert(1)&lt;/script&gt;")
        self.assertNotContains(r, "<script>alert(1)")

    def test_a_failed_test_shows_the_error(self) -> None:
        LanguageModel.objects.filter(pk=self.model.pk).update(
            last_test_error="UnknownModelError: nope", last_test_at=timezone.now()
        )
        self.login(self.bob)
        r = self.client.get("/p/p1/models/")
        self.assertContains(r, "UnknownModelError: nope")
        self.login(self.victor)  # what a model or its server answered is for operators only
        r = self.client.get("/p/p1/models/")
        self.assertContains(r, "error</span>")
        self.assertNotContains(r, "UnknownModelError: nope")

    def test_a_test_answer_is_shown_to_operators_only(self) -> None:
        LanguageModel.objects.filter(pk=self.model.pk).update(
            last_test_output="the server said: internal-hostname-7", last_test_at=timezone.now()
        )
        status = f"/p/p1/models/{self.model.pk}/test/status/"
        self.login(self.bob)
        self.assertContains(self.client.get("/p/p1/models/"), "internal-hostname-7")
        self.assertContains(self.client.get(status), "internal-hostname-7")
        self.login(self.victor)  # a viewer sees that it answered, never what
        for url in ("/p/p1/models/", status):
            r = self.client.get(url)
            self.assertEqual(r.status_code, 200)
            self.assertNotContains(r, "internal-hostname-7")

    def test_status_of_another_projects_model_is_404(self) -> None:
        self.assertEqual(
            self.status_for(self.charlie, "get", f"/p/p1/models/{self.model.pk}/test/status/"), 404
        )
        self.assertEqual(
            self.status_for(self.charlie, "get", f"/p/p2/models/{self.model.pk}/test/status/"), 404
        )

    def test_only_operators_edit_models_of_their_project(self) -> None:
        url = f"/p/p1/models/{self.model.pk}/edit/"
        self.assert_roles("get", url, OPERATE)
        changed = {**LITELLM, "name": "renamed"}
        self.assert_roles("post", url, {"reviewer": 403, "viewer": 403, "outsider": 404}, changed)
        self.assertEqual(LanguageModel.objects.get(pk=self.model.pk).name, "smollm2")
        foreign = self.make_model("theirs", project=self.p2)
        self.login(self.bob)
        self.assertEqual(self.client.get(f"/p/p1/models/{foreign.pk}/edit/").status_code, 404)
        self.assertEqual(self.client.get(f"/p/p2/models/{foreign.pk}/edit/").status_code, 404)

    def test_an_unused_model_can_be_changed_entirely(self) -> None:
        self.login(self.bob)
        self.assertContains(self.client.get("/p/p1/models/"), f"/p/p1/models/{self.model.pk}/edit/")
        r = self.client.post(f"/p/p1/models/{self.model.pk}/edit/", {**LITELLM, "name": "api"})
        self.assertRedirects(r, "/p/p1/models/")
        model = LanguageModel.objects.get(pk=self.model.pk)
        self.assertEqual(
            (model.name, model.kind, model.model_name), ("api", "litellm", LITELLM["model_name"])
        )
        r = self.client.post(
            f"/p/p1/models/{self.model.pk}/edit/", {**LITELLM, "api_key_env": "sk-abc123secret"}
        )
        self.assertContains(r, "not the key itself", status_code=400)

    def test_a_used_model_keeps_what_it_is_and_changes_only_its_settings(self) -> None:
        self.make_run(teacher=self.model)
        self.login(self.bob)
        url = f"/p/p1/models/{self.model.pk}/edit/"
        self.assertContains(
            self.client.get(url), "Fixed: runs or fine-tunes already used this model."
        )
        local = {
            "name": "teacher",
            "kind": "litellm",
            "model_name": "other",
            "temperature": "0.7",
            "max_tokens": "64",
        }
        self.assertRedirects(self.client.post(url, local), "/p/p1/models/")
        model = LanguageModel.objects.get(pk=self.model.pk)
        self.assertEqual(
            (model.name, model.kind, model.model_name, model.temperature, model.max_tokens),
            ("teacher", "local", "smollm2", 0.7, 64),
        )

    def test_model_posts_need_the_csrf_token_including_htmx_posts(self) -> None:
        client, token = self.csrf_client(self.bob)
        self.assertEqual(client.post("/p/p1/models/new/", LITELLM).status_code, 403)
        edit = f"/p/p1/models/{self.model.pk}/edit/"
        self.assertEqual(client.post(edit, LITELLM).status_code, 403)
        url = f"/p/p1/models/{self.model.pk}/test/"
        self.assertEqual(client.post(url, headers={"HX-Request": "true"}).status_code, 403)
        with self.captureOnCommitCallbacks(execute=True):
            r = client.post(url, headers={"HX-Request": "true", "X-CSRFToken": token})
        self.assertEqual(r.status_code, 200)
