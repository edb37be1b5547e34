"""Bootstrapping traces: every example recorded, resumable, stoppable, on the real bundled model."""

from __future__ import annotations

import json

import pytest
from dspy.utils.dummies import DummyLM

from jobs.engine.bootstrap import bootstrap, bootstrap_with_lm
from jobs.engine.types import DEMO_PLACEHOLDER, BootstrapConfig, MetricSpec, ModelSpec

METRIC = MetricSpec("normalized_match", "sentiment")
KEYS = {
    "example_index",
    "inputs",
    "labels",
    "outputs",
    "calls",
    "score",
    "passed",
    "parsed",
    "error",
    "lm_calls",
    "tokens",
    "tokens_in",
    "tokens_out",
    "elapsed_s",
    "attempt",
    "attempts",
}


@pytest.mark.slow
def test_it_bootstraps_eight_examples_with_the_bundled_teacher(demo_spec, demo_rows, demo_examples):
    records, progress = [], []
    summary = bootstrap(
        program=demo_spec,
        teacher=ModelSpec("local", "smollm2", max_tokens=96),
        examples=demo_examples[8:16],
        metric=METRIC,
        config=BootstrapConfig(num_threads=8, num_demos=4),
        demos=demo_rows[:8],
        on_trace=records.append,
        on_progress=progress.append,
    )
    assert summary.done == summary.total == 8 == len(records)
    assert summary.passed + summary.failed + summary.errored == 8
    assert [p.done for p in progress] == list(range(1, 9))
    assert sorted(r["example_index"] for r in records) == list(range(8, 16))
    for record in records:
        assert set(record) == KEYS
        json.dumps(record)
        assert record["lm_calls"] >= 1 and record["tokens"] > 0
        if record["parsed"]:
            call = record["calls"][0]
            assert call["predictor"] == "classify.predict"
            assert [m["role"] for m in call["messages"]] == ["system", "user", "assistant"]
            assert record["passed"] == (record["score"] >= 1.0)
        else:
            assert record["error"] and not record["passed"]


def test_a_run_temperature_overrides_the_teachers_own():
    teacher = ModelSpec("local", "smollm2", temperature=0.0, max_tokens=96)
    assert BootstrapConfig().teacher_for_run(teacher) == teacher
    warm = BootstrapConfig(temperature=0.7).teacher_for_run(teacher)
    assert (warm.temperature, warm.name, warm.max_tokens) == (0.7, "smollm2", 96)


def test_it_records_unparseable_answers_instead_of_crashing(demo_spec, demo_rows, demo_examples):
    good, bad = demo_rows[0], demo_rows[1]
    # An answer with no field markers at all, and one that stops after the reasoning.
    lm = DummyLM(
        {
            good["text"]: {"reasoning": "clear", "sentiment": good["sentiment"]},
            bad["text"]: {"reasoning": "half an answer"},
        }
    )
    records = []
    summary = bootstrap_with_lm(
        program=demo_spec,
        lm=lm,
        examples=demo_examples[:2],
        metric=METRIC,
        config=BootstrapConfig(num_threads=2),
        on_trace=records.append,
    )
    by_index = {r["example_index"]: r for r in records}
    assert summary.passed == 1 and summary.errored == 1
    failed = by_index[1]
    assert not failed["parsed"] and not failed["passed"] and "did not parse" in failed["error"]
    assert failed["calls"][-1]["error"] and failed["calls"][-1]["raw"]
    # the part that parsed
    assert failed["calls"][-1]["outputs"].get("reasoning") == "half an answer"
    assert by_index[0]["passed"] and by_index[0]["outputs"] == {"sentiment": good["sentiment"]}


def test_it_skips_finished_examples_and_honours_limit_and_stop(demo_spec, demo_rows, demo_examples):
    lm = DummyLM({r["text"]: {"reasoning": "r", "sentiment": r["sentiment"]} for r in demo_rows})
    config = BootstrapConfig(num_threads=1, limit=6)
    records = []
    bootstrap_with_lm(
        program=demo_spec,
        lm=lm,
        examples=demo_examples,
        metric=METRIC,
        config=config,
        skip={0, 2, 4},
        on_trace=records.append,
    )
    assert sorted(r["example_index"] for r in records) == [1, 3, 5]

    # A stop starts no further example: with one thread nothing else is in flight.
    stopped = []
    summary = bootstrap_with_lm(
        program=demo_spec,
        lm=lm,
        examples=demo_examples,
        metric=METRIC,
        config=config,
        on_trace=stopped.append,
        should_stop=lambda: len(stopped) >= 2,
    )
    assert len(stopped) == 2 and summary.done == 2 and summary.total == 6
    # With more threads, at most the examples already in flight finish after the stop.
    stopped = []
    summary = bootstrap_with_lm(
        program=demo_spec,
        lm=lm,
        examples=demo_examples,
        metric=METRIC,
        config=BootstrapConfig(num_threads=3),
        on_trace=stopped.append,
        should_stop=lambda: len(stopped) >= 2,
    )
    assert 2 <= len(stopped) <= 4 and summary.done == len(stopped)
    nothing = bootstrap_with_lm(
        program=demo_spec,
        lm=lm,
        examples=demo_examples,
        metric=METRIC,
        config=config,
        on_trace=stopped.append,
        should_stop=lambda: True,
    )
    assert nothing.done == 0


def test_reasoned_demos_keep_the_teachers_passing_reasoning(demo_spec, demo_rows, demo_examples):
    good, wrong, copier, other = demo_rows[:4]
    flip = {"positive": "negative", "negative": "positive"}
    answers = {
        good["text"]: {"reasoning": "It says it loved it.", "sentiment": good["sentiment"]},
        wrong["text"]: {"reasoning": "Hard to say.", "sentiment": flip[wrong["sentiment"]]},
        copier["text"]: {"reasoning": DEMO_PLACEHOLDER, "sentiment": copier["sentiment"]},
        other["text"]: {"reasoning": "r", "sentiment": other["sentiment"]},
    }
    lm = DummyLM(answers)
    for reason in (False, True):
        records = []
        bootstrap_with_lm(
            program=demo_spec,
            lm=lm,
            examples=demo_examples[3:4],
            metric=METRIC,
            config=BootstrapConfig(num_threads=2, num_demos=3, reason_demos=reason),
            demos=demo_rows[:3],
            on_trace=records.append,
        )
        demos = {d["text"]: d for d in records[0]["calls"][0]["demos"]}
        assert set(demos) == {good["text"], wrong["text"], copier["text"]}
        if reason:  # only the passing answer that did not copy the placeholder is kept
            assert demos[good["text"]]["reasoning"] == "It says it loved it."
            assert demos[good["text"]]["augmented"] is True
        else:
            assert "reasoning" not in demos[good["text"]]
        assert demos[wrong["text"]] == wrong and demos[copier["text"]] == copier  # stay labeled


def test_it_calls_back_on_the_callers_thread(demo_spec, demo_rows, demo_examples):
    import threading

    lm = DummyLM({r["text"]: {"reasoning": "r", "sentiment": r["sentiment"]} for r in demo_rows})
    threads = set()
    bootstrap_with_lm(
        program=demo_spec,
        lm=lm,
        examples=demo_examples[:6],
        metric=METRIC,
        config=BootstrapConfig(num_threads=4),
        on_trace=lambda r: threads.add(threading.get_ident()),
        on_progress=lambda p: threads.add(threading.get_ident()),
    )
    assert threads == {threading.get_ident()}


def test_it_refuses_a_metric_on_a_field_the_program_does_not_output(demo_spec, demo_examples):
    with pytest.raises(ValueError, match="label"):
        bootstrap_with_lm(
            program=demo_spec,
            lm=DummyLM([]),
            examples=demo_examples[:1],
            metric=MetricSpec("exact_match", "label"),
            config=BootstrapConfig(),
            on_trace=lambda r: None,
        )


class FirstTryWrong(DummyLM):
    """A deterministic fake teacher (a real model cannot be made to fail on cue): its own answers
    are ``first``; a retry (a copy at a raised temperature with a rollout id, as best-of-N makes)
    answers ``again``."""

    def __init__(self, first: dict, again: dict) -> None:
        super().__init__(first)
        self.again = again
        self.copies: list[dict] = []

    def copy(self, **kwargs):
        self.copies.append(kwargs)
        return DummyLM(self.again)


def _answers(rows, flip: bool) -> dict:
    other = {"positive": "negative", "negative": "positive"}
    return {
        row["text"]: {
            "reasoning": "r",
            "sentiment": other[row["sentiment"]] if flip else row["sentiment"],
        }
        for row in rows
    }


@pytest.mark.parametrize(
    ("retries", "again_right", "attempt", "passed", "calls"),
    [(0, True, 1, False, 1), (2, True, 2, True, 2), (2, False, 3, False, 3)],
)
def test_best_of_n_retries_a_failing_answer_and_keeps_the_first_pass(
    demo_spec, demo_rows, demo_examples, retries, again_right, attempt, passed, calls
):
    rows = demo_rows[:2]
    lm = FirstTryWrong(_answers(rows, flip=True), _answers(rows, flip=not again_right))
    records: list[dict] = []
    summary = bootstrap_with_lm(
        program=demo_spec,
        lm=lm,
        examples=demo_examples[:2],
        metric=METRIC,
        config=BootstrapConfig(num_threads=1, retries=retries, retry_temperature=0.9),
        on_trace=records.append,
    )
    assert summary.passed == (2 if passed else 0)
    for record in records:
        assert (record["attempt"], record["passed"], record["lm_calls"]) == (attempt, passed, calls)
        assert len(record["attempts"]) == attempt - 1
        for earlier in record["attempts"]:  # what the failed attempts answered is kept
            assert earlier["score"] == 0.0 and earlier["outputs"]["sentiment"]
    assert summary.lm_calls == 2 * calls
    assert all(c["temperature"] == 0.9 and c["rollout_id"] >= 1 for c in lm.copies)


def test_a_passing_first_answer_is_not_retried(demo_spec, demo_rows, demo_examples):
    rows = demo_rows[:2]
    lm = FirstTryWrong(_answers(rows, flip=False), _answers(rows, flip=True))
    records: list[dict] = []
    bootstrap_with_lm(
        program=demo_spec,
        lm=lm,
        examples=demo_examples[:2],
        metric=METRIC,
        config=BootstrapConfig(num_threads=1, retries=3),
        on_trace=records.append,
    )
    assert [r["attempt"] for r in records] == [1, 1] and lm.copies == []
