"""The engine's training rows equal DSPy's BootstrapFinetune rows for the same traces."""

from __future__ import annotations

import json
from collections.abc import Set

import dspy
import pytest
from dspy.teleprompt.bootstrap_finetune import BootstrapFinetune
from dspy.teleprompt.bootstrap_trace import bootstrap_trace_data
from dspy.utils.dummies import DummyLM

from jobs.engine.bootstrap import bootstrap_with_lm
from jobs.engine.demos import pick_demos
from jobs.engine.metrics import make_dspy_metric
from jobs.engine.program_module import build_program
from jobs.engine.programs import parse_program_spec
from jobs.engine.tracing import attach_demos
from jobs.engine.training_data import build_training_rows, chat_adapter, rerender_trace
from jobs.engine.types import BootstrapConfig, MetricSpec

METRIC = MetricSpec("exact_match", "sentiment")
TWO_STEP = {
    "name": "two_step",
    "modules": [
        {
            "name": "summarize",
            "type": "Predict",
            "signature": "text -> gist",
            "instructions": "Summarize the review in a few words.",
        },
        {"name": "classify", "type": "ChainOfThought", "signature": "text, gist -> sentiment"},
    ],
}


def scripted_lm(rows: list[dict], *, wrong: Set[int] = frozenset()) -> DummyLM:
    """Answers keyed by each review's text: deterministic whatever the thread order."""
    answers = {}
    for i, row in enumerate(rows):
        label = (
            row["sentiment"]
            if i not in wrong
            else ("negative" if row["sentiment"] == "positive" else "positive")
        )
        answers[row["text"]] = {
            "gist": f"gist {i}",
            "reasoning": f"because {i}",
            "sentiment": label,
        }
    return DummyLM(answers)


def engine_rows(spec, lm, examples, *, demos=(), num_demos=0, **kwargs) -> list[dict]:
    records: list[dict] = []
    bootstrap_with_lm(
        program=spec,
        lm=lm,
        examples=examples,
        metric=METRIC,
        config=BootstrapConfig(num_threads=4, num_demos=num_demos),
        demos=demos,
        on_trace=records.append,
    )
    records.sort(key=lambda r: r["example_index"])
    json.dumps(records)  # stored as JSON: must be JSON-safe
    return build_training_rows([r for r in records if r["passed"]], **kwargs)


def dspy_rows(
    spec,
    lm,
    rows,
    *,
    demos=(),
    num_demos=0,
    multitask=True,
    exclude_demos=True,
    predictor_index=None,
) -> list[dict]:
    teacher = build_program(spec)
    attach_demos(teacher, pick_demos(demos, num_demos, 0))
    teacher.set_lm(lm)
    dataset = [dspy.Example(**row).with_inputs(*spec.input_fields) for row in rows]
    optimizer = BootstrapFinetune(
        metric=make_dspy_metric(METRIC),
        multitask=multitask,
        exclude_demos=exclude_demos,
        adapter=chat_adapter(),
    )
    with dspy.context(lm=lm, adapter=chat_adapter()):
        trace_data = bootstrap_trace_data(
            program=teacher, dataset=dataset, metric=optimizer.metric, num_threads=1
        )
        data, _ = optimizer._prepare_finetune_data(
            trace_data=trace_data, lm=lm, pred_ind=predictor_index
        )
    return data


@pytest.mark.parametrize("exclude_demos", [True, False])
def test_it_builds_the_same_rows_as_dspy_for_one_module(
    demo_spec, demo_rows, demo_examples, exclude_demos
):
    rows, examples = demo_rows[8:20], demo_examples[8:20]
    lm = scripted_lm(demo_rows, wrong={9, 14})
    kwargs = {"demos": demo_rows[:8], "num_demos": 3}
    ours = engine_rows(demo_spec, lm, examples, exclude_demos=exclude_demos, **kwargs)
    theirs = dspy_rows(demo_spec, lm, rows, exclude_demos=exclude_demos, **kwargs)
    assert len(ours) == 10  # the two wrong answers are filtered out by the metric
    assert ours == theirs


@pytest.mark.parametrize("multitask,predictor_index", [(True, None), (False, 0), (False, 1)])
def test_it_builds_the_same_rows_as_dspy_for_a_chain(
    demo_rows, demo_examples, multitask, predictor_index
):
    spec = parse_program_spec(TWO_STEP)
    lm = scripted_lm(demo_rows)
    ours = engine_rows(
        spec, lm, demo_examples[:6], multitask=multitask, predictor_index=predictor_index
    )
    theirs = dspy_rows(
        spec, lm, demo_rows[:6], multitask=multitask, predictor_index=predictor_index
    )
    assert len(ours) == (12 if multitask else 6)
    assert ours == theirs


def test_it_rerenders_an_edited_trace_through_the_same_adapter(demo_rows, demo_examples):
    spec = parse_program_spec(TWO_STEP)
    records: list[dict] = []
    bootstrap_with_lm(
        program=spec,
        lm=scripted_lm(demo_rows),
        examples=demo_examples[:1],
        metric=METRIC,
        config=BootstrapConfig(num_threads=1),
        on_trace=records.append,
    )
    edited = rerender_trace(records[0], {"gist": "an edited gist", "sentiment": "negative"})
    # The chain's second call read the gist: it sees the edit, in its messages too.
    assert edited["calls"][1]["inputs"]["gist"] == "an edited gist"
    assert "an edited gist" in edited["calls"][1]["messages"][1]["content"]
    assert "negative" in edited["calls"][1]["messages"][-1]["content"]
    assert edited["outputs"]["sentiment"] == "negative"
    # Re-rendering is the formatter itself: a fresh DSPy render of the edited call is identical.
    theirs = chat_adapter().format_finetune_data(
        signature=build_program(spec).classify.predict.signature,
        demos=[],
        inputs=edited["calls"][1]["inputs"],
        outputs=edited["calls"][1]["outputs"],
    )
    assert edited["calls"][1]["messages"] == theirs["messages"]
    assert (
        records[0]["outputs"]["sentiment"] != "negative"
        or records[0]["labels"]["sentiment"] == "negative"
    )


def test_it_refuses_to_edit_unknown_fields(demo_spec, demo_rows, demo_examples):
    records: list[dict] = []
    bootstrap_with_lm(
        program=demo_spec,
        lm=scripted_lm(demo_rows),
        examples=demo_examples[:1],
        metric=METRIC,
        config=BootstrapConfig(num_threads=1),
        on_trace=records.append,
    )
    with pytest.raises(ValueError, match="colour"):
        rerender_trace(records[0], {"colour": "red"})


def test_it_needs_a_predictor_index_without_multitask():
    with pytest.raises(ValueError, match="predictor_index"):
        build_training_rows([], multitask=False)
