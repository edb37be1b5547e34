"""The OpenAPI schema: valid (drf-spectacular's validation, no warnings), listing every endpoint
and method the API serves; and its docs page, whose files are served here, not from a CDN."""

from __future__ import annotations

import io
import re

import yaml
from django.core.management import call_command
from django.test import SimpleTestCase
from django.urls import URLPattern
from drf_spectacular.validation import validate_schema

from jobs.api import urls as api_urls
from tests.base import BaseTestCase


def served_endpoints() -> set[tuple[str, str]]:
    """(path with {params}, method) for every route of the API's router."""
    out = set()
    for pattern in api_urls.router.urls:
        assert isinstance(pattern, URLPattern)
        route = "/api/v1/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(pattern.pattern))
        route = route.replace("{pk}", "{id}")
        actions = getattr(pattern.callback, "actions", {})
        out |= {(route, method) for method in actions if method != "head"}  # head: as get
    return out


class SchemaTestCase(SimpleTestCase):
    def schema(self) -> dict:
        out = io.StringIO()
        # Warnings fail it: every view is typed, every parameter resolved.
        call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
        return yaml.safe_load(out.getvalue())

    def test_it_validates_and_lists_every_endpoint(self) -> None:
        schema = self.schema()
        validate_schema(schema)
        documented = {
            (path, method)
            for path, item in schema["paths"].items()
            for method in item
            if method != "parameters"
        }
        self.assertEqual(served_endpoints() - documented, set())
        self.assertEqual(documented - served_endpoints(), set())
        self.assertGreaterEqual(len(documented), 40)
        self.assertIn("projectApiKey", schema["components"]["securitySchemes"])

    def test_write_endpoints_document_their_input_and_errors(self) -> None:
        schema = self.schema()
        run_create = schema["paths"]["/api/v1/projects/{slug}/runs/"]["post"]
        self.assertIn("400", run_create["responses"])
        body = schema["components"]["schemas"]["RunCreateRequest"]
        self.assertIn("metric_field", body["required"])
        self.assertEqual(body["properties"]["num_demos"]["default"], 4)
        upload = schema["paths"]["/api/v1/projects/{slug}/trainsets/"]["post"]
        self.assertIn("multipart/form-data", upload["requestBody"]["content"])
        finetune = schema["components"]["schemas"]["FinetuneCreateRequest"]["properties"]
        for knob in (
            "epochs",
            "learning_rate",
            "lora_r",
            "lora_alpha",
            "lora_dropout",
            "target_modules",
            "seed",
        ):
            self.assertIn(knob, finetune)


class SchemaPagesTestCase(BaseTestCase):
    def test_the_schema_and_docs_are_served_without_a_cdn(self) -> None:
        r = self.client.get("/api/v1/schema/")
        self.assertEqual(r.status_code, 200)
        self.assertIn(b"openapi: 3", r.content)
        r = self.client.get("/api/v1/docs/")
        self.assertEqual(r.status_code, 200)
        html = r.content.decode()
        sources = re.findall(r'(?:src|href)="([^"]+)"', html)
        self.assertTrue(any("drf_spectacular_sidecar" in s for s in sources), sources)
        self.assertFalse(
            [s for s in sources if s.startswith(("http://", "https://", "//"))], sources
        )
        self.assertNotIn("cdn.jsdelivr", html)

    def test_every_resource_lives_under_its_project(self) -> None:
        routes = {str(p.pattern) for p in api_urls.router.urls}
        outside = {r for r in routes if not r.startswith("projects/<slug:slug>/")}
        self.assertEqual(outside, {"projects/"})  # the list of projects (its detail is under it)
