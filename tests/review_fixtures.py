"""Traces as the engine records them, made directly in the database (no model needed)."""

from __future__ import annotations

from typing import Any

import dspy

from jobs.engine.training_data import call_messages, signature_to_dict
from jobs.models import BootstrapRun, Trace

PLACEHOLDER = "Not supplied for this particular example."
COT_SIGNATURE = signature_to_dict(
    dspy.ChainOfThought("text -> sentiment").predict.signature.with_instructions(
        "Classify the sentiment."
    )
)


def cot_call(text: str, sentiment: str, reasoning: str) -> dict[str, Any]:
    call: dict[str, Any] = {
        "predictor": "classify.predict",
        "signature": COT_SIGNATURE,
        "inputs": {"text": text},
        "outputs": {"reasoning": reasoning, "sentiment": sentiment},
        "demos": [],
        "error": "",
    }
    call["messages"] = call_messages(call)
    return call


def make_cot_trace(
    run: BootstrapRun,
    index: int,
    *,
    label: str | None = None,
    output: str | None = None,
    reasoning: str | None = None,
    text: str | None = None,
    score: float | None = None,
    **kwargs: Any,
) -> Trace:
    """A ChainOfThought trace of "text -> sentiment"; passed when the output equals the label."""
    label = label or ("positive" if index % 2 else "negative")
    output = output or label
    text = text if text is not None else f"review number {index}"
    reasoning = reasoning if reasoning is not None else f"The review {index} sounds {output}."
    call = cot_call(text, output, reasoning)
    passed = output == label
    kwargs.setdefault("passed", passed)
    kwargs.setdefault("parsed", True)
    return Trace.objects.create(
        run=run,
        example_index=index,
        inputs={"text": text},
        labels={"sentiment": label},
        outputs={"sentiment": output},
        calls=[call],
        score=score if score is not None else (1.0 if passed else 0.0),
        **kwargs,
    )


def make_errored_trace(
    run: BootstrapRun, index: int, raw: str = "I think it is [[ ## sentiment"
) -> Trace:
    error = "the answer did not parse: Adapter ChatAdapter failed to parse the LM response."
    call: dict[str, Any] = {
        "predictor": "classify.predict",
        "signature": COT_SIGNATURE,
        "inputs": {},
        "outputs": {},
        "demos": [],
        "error": error,
        "raw": raw,
        "messages": [],
    }
    return Trace.objects.create(
        run=run,
        example_index=index,
        inputs={"text": f"review number {index}"},
        labels={"sentiment": "positive"},
        outputs={},
        calls=[call],
        score=0.0,
        passed=False,
        parsed=False,
        error=error,
    )
