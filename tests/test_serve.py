"""The model server's HTTP surface, in process with a stand-in engine: keys, which models a key
sees, OpenAI's answer, chunk and error shapes. The real engine, through a real `serve` process:
tests/test_serve_live.py."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from starlette.testclient import TestClient

from jobs.engine.decoding import Generation
from jobs.serve.app import create_app
from tests.base import WorkerTestCase
from tests.serving import ServedModelsMixin


class EchoBackend:
    """Answers "echo: <last message>" in two streamed pieces; records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def submit(
        self,
        model_name: str,
        messages: Sequence[dict[str, str]],
        *,
        max_new_tokens: int,
        temperature: float,
        stop: Sequence[str],
        on_text: Callable[[str], None] | None = None,
    ) -> Future[Generation]:
        self.calls.append(
            {
                "model": model_name,
                "messages": list(messages),
                "max_new_tokens": max_new_tokens,
                "temperature": temperature,
                "stop": tuple(stop),
            }
        )
        text = f"echo: {messages[-1]['content']}"
        if on_text is not None:
            on_text(text[:3])
            on_text(text[3:6])
        future: Future[Generation] = Future()
        future.set_result(Generation(text, "stop", 7, 3))
        return future


class ServeApiTestCase(ServedModelsMixin, WorkerTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.backend = EchoBackend()
        self.http = TestClient(create_app(self.backend))

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def chat(self, key: str | None, **body: Any) -> Any:
        body.setdefault("messages", [{"role": "user", "content": "hi"}])
        return self.http.post(
            "/v1/chat/completions", json=body, headers=self.auth(key) if key else {}
        )

    def assert_error(self, r: Any, status: int, *, param: str | None = None, code: Any = None):
        self.assertEqual(r.status_code, status, r.text)
        error = r.json()["error"]
        self.assertEqual(set(error), {"message", "type", "param", "code"})
        self.assertTrue(error["message"])
        self.assertEqual(error["param"], param)
        if code is not None:
            self.assertEqual(error["code"], code)
        return error

    def test_it_refuses_requests_without_a_valid_key(self) -> None:
        error = self.assert_error(self.http.get("/v1/models"), 401)
        self.assertEqual(error["type"], "invalid_request_error")
        self.assertIn("API key", error["message"])
        self.assert_error(self.chat(None, model="smollm2"), 401)
        self.assert_error(self.http.get("/v1/models", headers=self.auth("bft_nope")), 401)
        self.assert_error(
            self.http.get("/v1/models", headers=self.auth(self.key1 + "x")),
            401,
            code="invalid_api_key",
        )
        self.assertEqual(self.backend.calls, [])

    def test_a_key_lists_its_projects_local_models_only(self) -> None:
        r = self.http.get("/v1/models", headers=self.auth(self.key1))
        self.assertEqual(r.status_code, 200)
        body = r.json()
        self.assertEqual(body["object"], "list")
        ids = [m["id"] for m in body["data"]]
        # fine-tuned models under their model id, the base under its name; no LiteLLM model
        self.assertEqual(sorted(ids), sorted(["smollm2", *self.students.values()]))
        self.assertEqual({m["owned_by"] for m in body["data"]}, {"p1"})
        self.assertEqual({m["object"] for m in body["data"]}, {"model"})
        r = self.http.get("/v1/models", headers=self.auth(self.key2))
        self.assertEqual([m["id"] for m in r.json()["data"]], ["p2 base"])
        r = self.http.get(f"/v1/models/{self.students['A']}", headers=self.auth(self.key1))
        self.assertEqual(r.json()["id"], self.students["A"])

    def test_another_projects_model_is_not_found(self) -> None:
        for model in (self.students["A"], "smollm2", "gpt"):
            self.assert_error(self.chat(self.key2, model=model), 404, code="model_not_found")
        self.assert_error(self.chat(self.key1, model="p2 base"), 404, code="model_not_found")
        self.assert_error(
            self.http.get(f"/v1/models/{self.students['A']}", headers=self.auth(self.key2)),
            404,
            code="model_not_found",
        )
        self.assertEqual(self.backend.calls, [])

    def test_it_answers_with_usage_in_openais_shape(self) -> None:
        r = self.chat(
            self.key1,
            model=self.students["B"],
            messages=[
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "hello"}]},
            ],
            max_tokens=5,
            stop="\n\n",
        )
        self.assertEqual(r.status_code, 200, r.text)
        body = r.json()
        self.assertEqual(body["object"], "chat.completion")
        self.assertEqual(body["model"], self.students["B"])
        self.assertTrue(body["id"].startswith("chatcmpl-"))
        self.assertEqual(
            body["choices"][0]["message"],
            {"role": "assistant", "content": "echo: hello", "refusal": None},
        )
        self.assertEqual(body["choices"][0]["finish_reason"], "stop")
        self.assertEqual(
            body["usage"], {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        )
        self.assertEqual(
            self.backend.calls,
            [
                {
                    "model": self.students["B"],
                    "messages": [
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "hello"},
                    ],
                    "max_new_tokens": 5,
                    "temperature": 0.0,
                    "stop": ("\n\n",),
                }
            ],
        )

    def test_a_fine_tuned_model_answers_to_its_project_name_too_and_defaults_come_from_the_row(
        self,
    ) -> None:
        r = self.chat(self.key1, model="smollm2 ft-A", temperature=0.7)
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.json()["model"], self.students["A"])
        self.assertEqual(self.backend.calls[0]["max_new_tokens"], 24)  # the row's max_tokens
        self.assertEqual(self.backend.calls[0]["temperature"], 0.7)
        self.chat(self.key1, model="smollm2", max_completion_tokens=3)
        self.assertEqual(self.backend.calls[1]["model"], "smollm2")
        self.assertEqual(self.backend.calls[1]["max_new_tokens"], 3)

    def test_it_streams_server_sent_events_ending_with_usage_and_done(self) -> None:
        with self.http.stream(
            "POST",
            "/v1/chat/completions",
            headers=self.auth(self.key1),
            json={
                "model": "smollm2",
                "messages": [{"role": "user", "content": "stream me"}],
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ) as r:
            self.assertEqual(r.status_code, 200)
            self.assertTrue(r.headers["content-type"].startswith("text/event-stream"))
            raw = "".join(r.iter_text())
        events = [e for e in raw.split("\n\n") if e]
        self.assertTrue(all(e.startswith("data: ") for e in events), raw)
        self.assertEqual(events[-1], "data: [DONE]")
        chunks = [json.loads(e[len("data: ") :]) for e in events[:-1]]
        self.assertEqual({c["object"] for c in chunks}, {"chat.completion.chunk"})
        self.assertEqual(len({c["id"] for c in chunks}), 1)
        self.assertEqual(chunks[0]["choices"][0]["delta"], {"role": "assistant", "content": ""})
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        self.assertEqual(text, "echo: stream me")
        self.assertGreaterEqual(len([c for c in chunks if c["choices"]]), 5)  # it did stream
        finish = chunks[-2]
        self.assertEqual(finish["choices"][0]["finish_reason"], "stop")
        self.assertEqual(finish["usage"]["total_tokens"], 10)
        self.assertEqual(chunks[-1]["choices"], [])  # include_usage: OpenAI's usage-only chunk
        self.assertEqual(
            chunks[-1]["usage"], {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        )

    def test_bad_requests_get_openais_error_shape_naming_the_parameter(self) -> None:
        cases: list[tuple[dict[str, Any], str | None]] = [
            ({"messages": [{"role": "user", "content": "x"}]}, "model"),
            ({"model": "smollm2", "messages": []}, "messages"),
            ({"model": "smollm2", "temperature": 5}, "temperature"),
            ({"model": "smollm2", "max_tokens": 0}, "max_tokens"),
            ({"model": "smollm2", "max_tokens": 10**6}, "max_tokens"),
            ({"model": "smollm2", "n": 2}, "n"),
            ({"model": "smollm2", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
            ({"model": "smollm2", "tools": [{"type": "function"}]}, "tools"),
            (
                {"model": "smollm2", "messages": [{"role": "tool", "content": "x"}]},
                "messages[0].role",
            ),
            (
                {
                    "model": "smollm2",
                    "messages": [{"role": "user", "content": [{"type": "image_url"}]}],
                },
                "messages[0].content",
            ),
        ]
        for body, param in cases:
            with self.subTest(body=body):
                body = {"messages": [{"role": "user", "content": "x"}], **body}
                r = self.http.post("/v1/chat/completions", json=body, headers=self.auth(self.key1))
                error = self.assert_error(r, 400, param=param)
                self.assertEqual(error["type"], "invalid_request_error")
        r = self.http.post(
            "/v1/chat/completions",
            content=b"{not json",
            headers={**self.auth(self.key1), "Content-Type": "application/json"},
        )
        self.assert_error(r, 400)
        self.assert_error(self.http.get("/v1/nothing", headers=self.auth(self.key1)), 404)
        self.assert_error(self.http.get("/v1/chat/completions", headers=self.auth(self.key1)), 405)
        self.assertEqual(self.backend.calls, [])
