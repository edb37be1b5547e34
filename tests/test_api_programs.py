"""/api/v1/projects/<slug>/programs/ and /models/: versions from a JSON/YAML spec (errors name
the key), list, detail; models registered with the form's allow-lists, listed, tested."""

from __future__ import annotations

import json

from django.test import override_settings

from jobs.models import LanguageModel, Program, ProgramVersion
from tests.api_client import READ, WRITE_OK, ApiTestCase
from tests.base import SENTIMENT_SPEC

PROGRAMS = "/api/v1/projects/p1/programs/"
MODELS = "/api/v1/projects/p1/models/"
YAML_SPEC = """
name: sentiment
modules:
  - name: classify
    type: ChainOfThought
    signature: text -> sentiment
"""


class ProgramApiTestCase(ApiTestCase):
    def test_a_spec_becomes_a_program_then_its_next_versions(self) -> None:
        r = self.api("post", PROGRAMS, {"spec": SENTIMENT_SPEC})
        self.assertEqual(r.status_code, 201, r.content)
        body = r.json()
        self.assertEqual(
            (body["name"], body["version"], body["created_version"]), ("sentiment", 1, True)
        )
        # the same spec again: nothing new
        r = self.api("post", PROGRAMS, {"spec": json.dumps(SENTIMENT_SPEC)})
        self.assertEqual(
            (r.status_code, r.json()["version"], r.json()["created_version"]), (200, 1, False)
        )
        # YAML text: version 2 of the same program
        r = self.api("post", PROGRAMS, {"spec": YAML_SPEC, "format": "yaml"})
        self.assertEqual((r.status_code, r.json()["version"]), (201, 2))
        program = Program.objects.get()
        self.assertEqual(program.versions.count(), 2)
        r = self.api("get", f"{PROGRAMS}{program.pk}/")
        body = r.json()
        self.assertEqual(
            (body["latest_version"], body["latest_version_id"]), (2, r.json()["versions"][0]["id"])
        )
        self.assertEqual([v["version"] for v in body["versions"]], [2, 1])
        self.assertEqual(body["versions"][0]["spec"]["modules"][0]["type"], "ChainOfThought")
        r = self.api("get", PROGRAMS)
        self.assertEqual(
            [(p["name"], p["latest_version"]) for p in r.json()["results"]], [("sentiment", 2)]
        )

    def test_spec_errors_name_the_key(self) -> None:
        bad = {
            "name": "x",
            "modules": [{"name": "m", "type": "Predict", "signature": "text sentiment"}],
        }
        r = self.api("post", PROGRAMS, {"spec": bad})
        self.assertEqual(r.status_code, 400)
        error = r.json()["errors"][0]
        self.assertEqual(error["field"], "spec.modules[0].signature")
        self.assertEqual(error["code"], "invalid_spec")
        self.assertIn("spec.modules[0].signature", r.json()["detail"])
        r = self.api("post", PROGRAMS, {"spec": "name: [unclosed", "format": "yaml"})
        self.assertEqual(r.json()["errors"][0]["field"], "spec")
        r = self.api("post", PROGRAMS, {"spec": {"name": "x"}})
        self.assertTrue(r.json()["errors"][0]["field"].startswith("spec"))
        r = self.api("post", PROGRAMS, {"spec": SENTIMENT_SPEC, "format": "toml"})
        self.assertEqual(r.json()["errors"][0]["field"], "format")
        r = self.api("post", PROGRAMS, {})
        self.assertEqual(r.json()["errors"][0]["field"], "spec")
        self.assertFalse(ProgramVersion.objects.exists())

    def test_keys_and_roles(self) -> None:
        self.assert_keys("get", PROGRAMS, READ)
        self.assert_keys("post", PROGRAMS, {**WRITE_OK, "rw": 201}, {"spec": SENTIMENT_SPEC})
        program = Program.objects.get()
        self.assert_keys("get", f"{PROGRAMS}{program.pk}/", READ)
        self.assertEqual(
            self.api("get", f"/api/v1/projects/p2/programs/{program.pk}/", key="other").status_code,
            404,
        )


class ModelApiTestCase(ApiTestCase):
    def test_it_registers_a_model_with_the_forms_defaults(self) -> None:
        r = self.api(
            "post", MODELS, {"name": "student", "model_name": "smollm2", "fine_tunable": True}
        )
        self.assertEqual(r.status_code, 201, r.content)
        body = r.json()
        self.assertEqual(
            (body["kind"], body["temperature"], body["max_tokens"]), ("local", 0.0, 256)
        )
        model = LanguageModel.objects.get()
        self.assertEqual(
            (model.project, model.created_by, model.fine_tunable), (self.p1, self.alice, True)
        )
        r = self.api("get", MODELS)
        self.assertEqual([m["name"] for m in r.json()["results"]], ["student"])
        self.assert_keys("get", f"{MODELS}{model.pk}/", READ)

    def test_the_allow_lists_refuse_with_the_field_and_the_setting(self) -> None:
        r = self.api(
            "post",
            MODELS,
            {
                "name": "api",
                "kind": "litellm",
                "model_name": "openai/gpt-4o-mini",
                "api_key_env": "SECRET_KEY",
                "api_base": "http://169.254.169.254/v1",
            },
        )
        self.assertEqual(r.status_code, 400)
        errors = {e["field"]: e["message"] for e in r.json()["errors"]}
        self.assertEqual(set(errors), {"api_key_env", "api_base"})
        self.assertIn("BFT_LM_API_BASES", errors["api_base"])
        r = self.api("post", MODELS, {"name": "local", "model_name": "/etc/passwd"})
        self.assertIn("BFT_LOCAL_MODEL_DIRS", r.json()["errors"][0]["message"])
        r = self.api("post", MODELS, {"name": "x", "model_name": "smollm2", "kind": "gguf"})
        self.assertEqual(r.json()["errors"][0]["field"], "kind")
        self.make_model("taken")
        r = self.api("post", MODELS, {"name": "taken", "model_name": "smollm2"})
        self.assertEqual(r.json()["errors"][0]["field"], "name")
        self.assertEqual(LanguageModel.objects.count(), 1)

    def test_a_test_is_queued_and_its_answer_shown_to_operators_only(self) -> None:
        model = self.make_model()
        self.assert_keys("post", f"{MODELS}{model.pk}/test/", {**WRITE_OK, "rw": 202})
        self.assertTrue(self.redis.keys("rq:job:model-test-*"))
        LanguageModel.objects.filter(pk=model.pk).update(last_test_output="Distillation is …")
        self.assertEqual(
            self.api("get", f"{MODELS}{model.pk}/").json()["last_test_output"], "Distillation is …"
        )
        self.assertIsNone(
            self.api("get", f"{MODELS}{model.pk}/", key="ro").json()["last_test_output"]
        )

    @override_settings(BFT_LM_API_BASES="")
    def test_a_refused_model_is_not_tested(self) -> None:
        model = self.make_model(
            "api", kind="litellm", model_name="ollama/llama3", fine_tunable=False
        )
        r = self.api("post", f"{MODELS}{model.pk}/test/")
        self.assertEqual((r.status_code, r.json()["code"]), (400, "model_refused"))
