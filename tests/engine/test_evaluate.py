"""The evaluator: DSPy's own scores on the same program, rows and metric; every row recorded."""

from __future__ import annotations

import json

import dspy
import pytest
from dspy.utils.dummies import DummyLM

from jobs.engine.evaluate import (
    Candidate,
    evaluate,
    evaluate_candidates,
    evaluate_with_lm,
    price_per_token,
)
from jobs.engine.local_lm import make_lm
from jobs.engine.metrics import make_dspy_metric
from jobs.engine.program_module import build_program
from jobs.engine.tracing import attach_demos
from jobs.engine.training_data import chat_adapter
from jobs.engine.types import MetricSpec, ModelSpec

METRIC = MetricSpec("normalized_match", "sentiment")
GREEDY = ModelSpec("local", "smollm2", temperature=0.0, max_tokens=96)


@pytest.mark.slow
def test_scores_equal_dspy_evaluate_row_by_row(demo_spec, demo_rows, demo_examples):
    rows, demos = demo_examples[8:16], demo_rows[:3]
    ours: list[dict] = []
    totals = evaluate(
        program=demo_spec,
        model=GREEDY,
        rows=rows,
        metric=METRIC,
        demos=demos,
        threads=1,  # as DSPy's below: batched decoding may break a greedy tie differently
        on_result=ours.append,
    )

    module = build_program(demo_spec)
    attach_demos(module, [dict(d) for d in demos])
    devset = [dspy.Example(**row["data"]).with_inputs(*demo_spec.input_fields) for row in rows]
    with dspy.context(lm=make_lm(GREEDY), adapter=chat_adapter()):
        theirs = dspy.Evaluate(devset=devset, metric=make_dspy_metric(METRIC), num_threads=1)(
            module
        )

    by_row = {r["row_index"]: r["score"] for r in ours}
    assert [by_row[row["index"]] for row in rows] == [float(s) for _e, _p, s in theirs.results]
    assert totals.done == len(rows) == len(ours)
    assert totals.score == pytest.approx(theirs.score / 100)
    for result in ours:
        json.dumps(result)
        assert result["latency_s"] > 0 and result["tokens_in"] > 0 and result["tokens_out"] > 0
        assert result["lm_calls"] == 1
        if not result["parsed"]:
            assert result["raw"] and result["score"] == 0.0


@pytest.mark.slow
def test_candidates_run_at_once_and_each_answers_as_it_does_alone(
    demo_spec, demo_rows, demo_examples
):
    """Two candidates of the bundled model (with and without demos) share its batch; each row
    gets its own candidate's prompt, the one it gets alone (the prompt's token count is exact;
    the greedy answer may break a tie differently in a batch). A candidate that cannot run is
    reported, the others still run, and a candidate's finished rows are skipped."""
    rows, demos = demo_examples[8:12], demo_rows[:2]
    shared = ModelSpec("local", "smollm2", temperature=0.0, max_tokens=48)
    alone: dict[str, list[dict]] = {"demos": [], "zero": []}
    for key, shown in (("demos", demos), ("zero", [])):
        evaluate(
            program=demo_spec,
            model=shared,
            rows=rows,
            metric=METRIC,
            demos=shown,
            threads=1,
            on_result=alone[key].append,
        )
    together: list[tuple[str, dict]] = []
    errors: dict[str, str] = {}
    totals = evaluate_candidates(
        program=demo_spec,
        candidates=[
            Candidate("demos", shared, demos),
            Candidate("zero", shared),
            Candidate("missing", ModelSpec("local", "no-such-model")),
        ],
        rows=rows,
        metric=METRIC,
        threads=1,
        skip={"zero": {rows[0]["index"]}},
        on_result=lambda key, result: together.append((key, result)),
        on_error=lambda key, exc: errors.setdefault(key, str(exc)),
    )
    assert set(errors) == {"missing"}
    assert set(totals) == {"demos", "zero"}
    assert (totals["demos"].done, totals["zero"].done) == (4, 3)

    def prompts(results: list[dict]) -> dict[int, int]:
        return {r["row_index"]: r["tokens_in"] for r in results}

    for key in ("demos", "zero"):
        mine = prompts([r for k, r in together if k == key])
        expected = prompts(alone[key])
        if key == "zero":
            expected.pop(rows[0]["index"])
        assert mine == expected, key
    assert all(prompts(alone["demos"])[i] > prompts(alone["zero"])[i] for i in expected)
    assert totals["demos"].passed == sum(r["passed"] for k, r in together if k == "demos")


def test_unparsed_answers_keep_their_raw_text_and_finished_rows_are_skipped(
    demo_spec, demo_rows, demo_examples
):
    good, bad = demo_rows[0], demo_rows[1]
    lm = DummyLM(
        {
            good["text"]: {"reasoning": "clear", "sentiment": good["sentiment"]},
            bad["text"]: {"reasoning": "half an answer"},
        }
    )
    results: list[dict] = []
    totals = evaluate_with_lm(
        program=demo_spec,
        lm=lm,
        rows=demo_examples[:3],
        metric=METRIC,
        threads=1,
        skip={2},
        on_result=results.append,
    )
    assert (totals.done, totals.passed, totals.parsed) == (2, 1, 1)
    by_row = {r["row_index"]: r for r in results}
    assert set(by_row) == {0, 1}
    assert by_row[0]["passed"] and by_row[0]["reasoning"] == "clear"
    assert by_row[0]["outputs"] == {"sentiment": good["sentiment"]}
    assert not by_row[1]["parsed"] and "half an answer" in by_row[1]["raw"]
    assert by_row[1]["error"].startswith("the answer did not parse")


def test_a_stop_starts_no_more_rows(demo_spec, demo_rows, demo_examples):
    lm = DummyLM([{"reasoning": "r", "sentiment": "positive"}] * 10)
    results: list[dict] = []
    evaluate_with_lm(
        program=demo_spec,
        lm=lm,
        rows=demo_examples[:10],
        metric=METRIC,
        threads=1,
        on_result=results.append,
        should_stop=lambda: len(results) >= 3,
    )
    assert len(results) == 3


def test_prices_come_from_litellm_for_litellm_models_only():
    assert price_per_token(GREEDY) == (None, None)
    known_in, known_out = price_per_token(ModelSpec("litellm", "openai/gpt-4o-mini"))
    assert known_in and known_out and known_out > known_in
    assert price_per_token(ModelSpec("litellm", "openai/no-such-model")) == (None, None)
