from __future__ import annotations

import json

from django.core.files.uploadedfile import SimpleUploadedFile

from jobs.models import Program, ProgramVersion
from tests.base import DEMO_DIR
from tests.web import OPERATE, READ_ALL, WebTestCase


def module(i: int, **values: str) -> dict[str, str]:
    return {f"modules-{i}-{k}": v for k, v in values.items()}


def form_post(name: str, *modules: dict[str, str], **extra: str) -> dict[str, str]:
    data = {
        "mode": "form",
        "name": name,
        "modules-TOTAL_FORMS": str(len(modules)),
        "modules-INITIAL_FORMS": "0",
        "modules-MIN_NUM_FORMS": "1",
        "modules-MAX_NUM_FORMS": "20",
        **extra,
    }
    for i, m in enumerate(modules):
        data.update(module(i, **m))
    return data


CLASSIFY = {
    "name": "classify",
    "type": "ChainOfThought",
    "signature": "text -> sentiment",
    "instructions": "Classify the review.",
    "field_descriptions": "text: a review\nsentiment: positive or negative",
}
EXPLAIN = {"name": "explain", "type": "Predict", "signature": "text, sentiment -> explanation"}


class ProgramCreateTestCase(WebTestCase):
    def test_only_operators_create_programs(self) -> None:
        self.assert_roles("get", "/p/p1/programs/new/", OPERATE)
        self.assert_roles(
            "post",
            "/p/p1/programs/new/",
            {"reviewer": 403, "viewer": 403, "outsider": 404},
            form_post("s", CLASSIFY),
        )
        self.assertFalse(Program.objects.exists())

    def test_it_creates_a_chained_program_from_the_form(self) -> None:
        self.login(self.bob)
        r = self.client.post("/p/p1/programs/new/", form_post("sentiment", CLASSIFY, EXPLAIN))
        program = Program.objects.get()
        self.assertRedirects(r, f"/p/p1/programs/{program.pk}/")
        version = program.latest_version
        assert version is not None
        spec = version.spec
        self.assertEqual(version.version, 1)
        self.assertEqual([m["name"] for m in spec["modules"]], ["classify", "explain"])
        self.assertEqual(
            spec["modules"][0]["fields"], {"text": "a review", "sentiment": "positive or negative"}
        )
        self.assertEqual(version.to_spec().input_fields, ("text",))

    def test_errors_name_the_key_and_nothing_is_saved(self) -> None:
        self.login(self.bob)
        r = self.client.post(
            "/p/p1/programs/new/",
            form_post("s", CLASSIFY, {**EXPLAIN, "signature": "text explanation"}),
        )
        self.assertContains(r, "modules[1].signature", status_code=400)
        self.assertContains(r, "exactly one", status_code=400)
        self.assertFalse(Program.objects.exists())

    def test_add_module_works_as_a_plain_post(self) -> None:
        self.login(self.bob)
        r = self.client.post("/p/p1/programs/new/", form_post("s", CLASSIFY, add_module="1"))
        self.assertEqual(r.status_code, 200)
        self.assertContains(r, 'name="modules-1-signature"')
        self.assertContains(r, 'value="text -&gt; sentiment"')  # what was typed is kept
        self.assertFalse(Program.objects.exists())

    def test_add_module_with_htmx_returns_one_row_and_the_new_total(self) -> None:
        self.login(self.bob)
        r = self.client.get(
            "/p/p1/programs/module-row/",
            {"modules-TOTAL_FORMS": "2"},
            headers={"HX-Request": "true"},
        )
        self.assertContains(r, 'name="modules-2-signature"')
        self.assertContains(r, "Module 3")
        self.assertContains(r, 'id="id_modules-TOTAL_FORMS" hx-swap-oob="true"')
        self.assertContains(r, 'value="3"')
        self.assertNotContains(r, "<html")
        self.assertEqual(self.status_for(self.victor, "get", "/p/p1/programs/module-row/"), 403)

    def test_the_form_page_wires_live_validation_and_add_module(self) -> None:
        self.login(self.bob)
        r = self.client.get("/p/p1/programs/new/")
        self.assertContains(r, 'hx-post="/p/p1/programs/validate/"')
        self.assertContains(r, 'hx-get="/p/p1/programs/module-row/"')
        self.assertContains(r, 'name="add_module"')

    def test_it_creates_a_program_from_pasted_json(self) -> None:
        self.login(self.bob)
        spec = (DEMO_DIR / "sentiment_program.json").read_text()
        r = self.client.post("/p/p1/programs/new/", {"mode": "spec", "spec": spec})
        program = Program.objects.get()
        self.assertRedirects(r, f"/p/p1/programs/{program.pk}/")
        self.assertEqual(program.name, "sentiment")
        version = program.latest_version
        assert version is not None
        self.assertEqual(version.spec["modules"][0]["type"], "ChainOfThought")

    def test_it_creates_a_program_from_an_uploaded_yaml_file(self) -> None:
        self.login(self.bob)
        yaml = b"name: qa\nmodules:\n  - name: answer\n    type: Predict\n    signature: question -> answer\n"
        r = self.client.post(
            "/p/p1/programs/new/",
            {"mode": "spec", "spec_file": SimpleUploadedFile("qa.yaml", yaml)},
        )
        self.assertEqual(r.status_code, 302)
        version = Program.objects.get().latest_version
        assert version is not None
        self.assertEqual(version.to_spec().output_fields, ("answer",))

    def test_a_bad_spec_is_refused_with_its_key(self) -> None:
        self.login(self.bob)
        spec = {"name": "x", "modules": [{"name": "m", "type": "Magic", "signature": "a -> b"}]}
        r = self.client.post("/p/p1/programs/new/", {"mode": "spec", "spec": json.dumps(spec)})
        self.assertContains(r, "modules[0].type", status_code=400)
        r = self.client.post("/p/p1/programs/new/", {"mode": "spec", "spec": "{not json"})
        self.assertContains(r, "invalid JSON", status_code=400)
        self.assertFalse(Program.objects.exists())

    def test_a_duplicate_program_name_is_refused(self) -> None:
        self.make_program()
        self.login(self.bob)
        r = self.client.post("/p/p1/programs/new/", form_post("sentiment", CLASSIFY))
        self.assertContains(r, "already has a program named", status_code=400)
        self.assertEqual(ProgramVersion.objects.count(), 1)

    def test_spec_text_is_escaped(self) -> None:
        self.login(self.bob)
        payload = {**CLASSIFY, "instructions": "<script>alert(1)</script>"}
        self.client.post("/p/p1/programs/new/", form_post("s", payload))
        r = self.client.get(f"/p/p1/programs/{Program.objects.get().pk}/")
        self.assertContains(r, "&lt;script&gt;alert(1)&lt;/script&gt;")
        self.assertNotContains(r, "<script>alert(1)")


class ProgramValidateTestCase(WebTestCase):
    url = "/p/p1/programs/validate/"

    def test_it_validates_as_you_type_naming_the_key(self) -> None:
        self.login(self.bob)
        r = self.client.post(
            self.url,
            form_post("s", {**CLASSIFY, "signature": "text -> reasoning"}),
            headers={"HX-Request": "true"},
        )
        self.assertContains(r, "modules[0].signature")
        self.assertContains(r, "reserved")
        self.assertNotContains(r, "<html")
        r = self.client.post(self.url, form_post("s", CLASSIFY), headers={"HX-Request": "true"})
        self.assertContains(r, "Valid: 1 module")
        r = self.client.post(
            self.url,
            {"mode": "spec", "spec": '{"name": "x", "modules": []}'},
            headers={"HX-Request": "true"},
        )
        self.assertContains(r, 'id="spec-check-spec"')
        self.assertContains(r, "must list at least one module")
        self.assertFalse(Program.objects.exists())

    def test_validation_needs_operate_rights_and_csrf(self) -> None:
        self.assert_roles(
            "post",
            self.url,
            {"reviewer": 403, "viewer": 403, "outsider": 404},
            form_post("s", CLASSIFY),
        )
        client, token = self.csrf_client(self.bob)
        data = form_post("s", CLASSIFY)
        self.assertEqual(
            client.post(self.url, data, headers={"HX-Request": "true"}).status_code, 403
        )
        r = client.post(self.url, data, headers={"HX-Request": "true", "X-CSRFToken": token})
        self.assertContains(r, "Valid")


class ProgramVersionsTestCase(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.version = self.make_program()
        self.program = self.version.program
        self.url = f"/p/p1/programs/{self.program.pk}/"

    def test_every_member_reads_programs_and_outsiders_get_404(self) -> None:
        self.assert_roles("get", self.url, READ_ALL)
        self.assert_roles("get", "/p/p1/programs/", READ_ALL)
        self.assert_roles("get", f"{self.url}v/1/", READ_ALL)
        self.assert_roles("get", f"{self.url}edit/", OPERATE)

    def test_editing_creates_version_n_plus_1_and_keeps_the_old_one(self) -> None:
        self.login(self.bob)
        r = self.client.get(f"{self.url}edit/")
        self.assertContains(r, 'value="text -&gt; sentiment"')
        data = form_post("ignored", {**CLASSIFY, "type": "Predict"}, EXPLAIN)
        r = self.client.post(f"{self.url}edit/", data)
        self.assertRedirects(r, self.url)
        versions = list(self.program.versions.order_by("version"))
        self.assertEqual([v.version for v in versions], [1, 2])
        self.assertEqual(versions[0].spec, self.version.spec)
        self.assertEqual(versions[1].spec["name"], "sentiment")
        self.assertEqual(len(versions[1].spec["modules"]), 2)
        r = self.client.get(f"{self.url}v/1/")
        self.assertContains(r, "You are looking at version 1")
        self.assertContains(self.client.get(self.url), "v2")

    def test_an_unchanged_edit_adds_no_version(self) -> None:
        self.login(self.bob)
        self.client.post(
            f"{self.url}edit/", {"mode": "spec", "spec": json.dumps(self.version.spec)}
        )
        self.assertEqual(self.program.versions.count(), 1)

    def test_a_missing_version_is_404(self) -> None:
        self.login(self.bob)
        self.assertEqual(self.client.get(f"{self.url}v/9/").status_code, 404)

    def test_it_shows_which_trainsets_fit(self) -> None:
        self.make_trainset()  # text, sentiment: fits
        other = self.make_trainset([{"question": "q", "answer": "a"}])
        other.name = "qa"
        other.save()
        self.login(self.victor)
        r = self.client.get(self.url)
        self.assertContains(r, "labels: sentiment")
        self.assertContains(r, "program input &#x27;text&#x27; is not a trainset field")
        self.assertContains(r, "no label column for any output")

    def test_edit_posts_need_csrf(self) -> None:
        client, _ = self.csrf_client(self.bob)
        self.assertEqual(client.post(f"{self.url}edit/", form_post("x", CLASSIFY)).status_code, 403)
        self.assertEqual(
            client.post("/p/p1/programs/new/", form_post("x", CLASSIFY)).status_code, 403
        )
