"""`manage.py serve` as a real process on 127.0.0.1, with the bundled model and two fine-tuned
students of it: the official openai client and DSPy get answers, streaming works, keys and errors
behave as OpenAI's do, and two students answer in one batch exactly as each does alone."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from jobs.devtools import free_port, stop_process
from jobs.models import FinetuneJob, LanguageModel
from tests import students
from tests.base import WorkerTestCase
from tests.serving import ServedModelsMixin, request, start_server, wait_until_up

pytestmark = pytest.mark.slow

REVIEW = "I really loved the food here."


class LiveServerMixin(ServedModelsMixin):
    real_adapters = True

    def setUp(self) -> None:
        super().setUp()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/v1"
        self.log = self.artifacts / "serve.log"
        # A long batch window: requests sent together surely share the first prefill.
        server = start_server(self.log, port, "--batch-window-ms", "200")
        self.addCleanup(stop_process, server)
        wait_until_up(self.url, server, self.log)

    def openai(self, key: str | None = None) -> Any:
        import openai

        return openai.OpenAI(base_url=self.url, api_key=key or self.key1, max_retries=0)

    def ask(self, model: str, text: str = REVIEW, **kwargs: Any) -> Any:
        kwargs.setdefault("max_tokens", 24)
        return self.openai().chat.completions.create(
            model=model, messages=students.prompt(text), temperature=0, **kwargs
        )


class ServeLiveTestCase(LiveServerMixin, WorkerTestCase):
    def test_the_openai_client_and_dspy_get_the_students_answers(self) -> None:
        import dspy

        a, b = self.students["A"], self.students["B"]
        answer = self.ask(a)
        self.assertEqual(answer.model, a)
        # what the student learned, to its end of turn (no stop sequence was asked for)
        self.assertEqual(
            answer.choices[0].message.content.strip(),
            "[[ ## sentiment ## ]]\npositive\n\n[[ ## completed ## ]]",
        )
        self.assertEqual(answer.choices[0].finish_reason, "stop")
        self.assertEqual(
            answer.usage.total_tokens,
            answer.usage.prompt_tokens + answer.usage.completion_tokens,
        )
        self.assertGreater(answer.usage.prompt_tokens, 50)
        self.assertIn("mixed", self.ask(b).choices[0].message.content)

        # streaming: the same text, in pieces, with usage at the end
        stream = self.ask(a, stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        pieces = [c.choices[0].delta.content for c in chunks if c.choices]
        self.assertEqual("".join(p or "" for p in pieces), answer.choices[0].message.content)
        self.assertGreater(len([p for p in pieces if p]), 2)
        self.assertEqual(chunks[-1].usage.completion_tokens, answer.usage.completion_tokens)

        # DSPy's own LM, and a DSPy program on it: the fine-tuned answers
        lm = dspy.LM(
            f"openai/{a}", api_base=self.url, api_key=self.key1, cache=False, max_tokens=24
        )
        self.assertEqual(lm(messages=students.prompt(REVIEW))[0], answer.choices[0].message.content)
        program = dspy.Predict(
            "text -> sentiment", instructions="Classify the sentiment of the review."
        )
        adapter = dspy.ChatAdapter(use_json_adapter_fallback=False)
        with dspy.context(lm=lm, adapter=adapter):
            self.assertEqual(program(text="This was a terrible meal.").sentiment, "negative")
        with dspy.context(lm=lm.copy(model=f"openai/{b}"), adapter=adapter):
            self.assertEqual(program(text="This was a terrible meal.").sentiment, "mixed")

    def test_keys_and_bad_requests_get_openais_errors(self) -> None:
        import openai

        status, body = request(f"{self.url}/models")
        self.assertEqual(status, 401)
        self.assertEqual(set(body["error"]), {"message", "type", "param", "code"})
        with self.assertRaises(openai.AuthenticationError):
            self.openai("bft_wrongwrong_key").models.list()
        ids = [m.id for m in self.openai().models.list()]
        self.assertEqual(sorted(ids), sorted(["smollm2", *self.students.values()]))
        with self.assertRaises(openai.NotFoundError) as caught:
            self.openai(self.key2).chat.completions.create(
                model=self.students["A"], messages=[{"role": "user", "content": "hi"}]
            )
        self.assertEqual(caught.exception.code, "model_not_found")
        with self.assertRaises(openai.BadRequestError) as bad:
            self.openai().chat.completions.create(
                model="smollm2", messages=[{"role": "user", "content": "hi"}], temperature=9
            )
        self.assertEqual(bad.exception.param, "temperature")
        self.assertEqual(bad.exception.type, "invalid_request_error")


class LiteLLMTeacherThroughServeTestCase(LiveServerMixin, WorkerTestCase):
    def test_a_run_whose_teacher_is_a_litellm_model_on_serve_stores_its_traces(self) -> None:
        """The LiteLLM teacher path end to end: a run's teacher registered as ``openai/<student>``
        with ``api_base`` on the loopback server (allow-listed here), its key from an allowed
        environment variable; the worker's code runs the bootstrap in this process."""
        from jobs import tasks
        from jobs.engine.types import BootstrapConfig, MetricSpec
        from jobs.services import runs
        from tests.test_model_policy import environ

        port = self.url.split(":")[2].split("/")[0]
        with (
            self.settings(BFT_LM_API_BASES=[f"127.0.0.1:{port}"]),
            environ(BFT_KEY_SERVE=self.key1),
        ):
            teacher = self.make_model(
                "served teacher",
                kind=LanguageModel.Kind.LITELLM,
                model_name=f"openai/{self.students['A']}",
                api_base=self.url,
                api_key_env="BFT_KEY_SERVE",
                max_tokens=24,
                temperature=0.0,
            )
            rows = [
                {"text": REVIEW, "sentiment": "positive"},
                {"text": "It broke after one day.", "sentiment": "negative"},
                {"text": "This was a terrible meal.", "sentiment": "negative"},
                {"text": "Great service and lovely staff.", "sentiment": "positive"},
            ]
            program = FinetuneJob.objects.get(output_model_id=self.students["A"]).run
            run = runs.create_bootstrap_run(
                project=self.p1,
                trainset=self.make_trainset(rows),
                program_version=program.program_version,
                teacher=teacher,
                metric=MetricSpec("exact_match", "sentiment"),
                config=BootstrapConfig(num_threads=2, num_demos=0),
                user=self.bob,
            )
            self.assertEqual(tasks.run_bootstrap(run.pk), "succeeded")
        run.refresh_from_db()
        self.assertEqual((run.status, run.done, run.errored), ("succeeded", 4, 0))
        traces = {t.inputs["text"]: t for t in run.traces.all()}
        self.assertEqual(len(traces), 4)
        # student A's own answers, through the server: the same as asking it directly
        self.assertEqual(traces[REVIEW].outputs["sentiment"], "positive")
        self.assertEqual(traces["It broke after one day."].outputs["sentiment"], "negative")
        self.assertGreaterEqual(run.passed, 3)


class ServeMixedBatchTestCase(LiveServerMixin, WorkerTestCase):
    def test_two_students_in_one_batch_answer_as_each_alone(self) -> None:
        models = [self.students["A"], self.students["B"], "smollm2", self.students["A"]]
        texts = [REVIEW, REVIEW, REVIEW, "It broke after one day."]
        alone = [
            self.ask(m, t).choices[0].message.content for m, t in zip(models, texts, strict=True)
        ]
        together: list[str] = [""] * len(models)
        barrier = threading.Barrier(len(models))

        def ask(i: int) -> None:
            barrier.wait()
            together[i] = self.ask(models[i], texts[i]).choices[0].message.content

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(models))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(together, alone)
        self.assertIn("positive", alone[0])
        self.assertIn("mixed", alone[1])
        self.assertIn("negative", alone[3])
        self.assertNotEqual(alone[0], alone[1])
