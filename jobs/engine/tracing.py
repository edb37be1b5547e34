"""One example through a program, traced: what the teacher (or any candidate) answered, each
predictor call with its messages, the score, and the usage; parse failures are recorded, never
raised. Shared by the bootstrap, the demo search and the evaluator.
"""

from __future__ import annotations

import time
from typing import Any

import dspy
from dspy.utils.exceptions import AdapterParseError
from dspy.utils.usage_tracker import UsageTracker, track_usage

from jobs.engine import metrics
from jobs.engine.programs import ProgramSpec
from jobs.engine.training_data import call_messages, signature_to_dict
from jobs.engine.types import MetricSpec


def attach_demos(
    module: dspy.Module,
    demos: list[dict[str, Any]],
    reasoned: list[dict[str, dict[str, Any]]] | None = None,
) -> None:
    """Give each predictor, for each demo, the teacher's reasoned call when there is one (see
    :func:`jobs.engine.bootstrap.reason_demos`), else the labeled demo if it carries all of the
    predictor's input fields and one of its outputs."""
    for name, predictor in module.named_predictors():
        sig = predictor.signature
        chosen = []
        for index, demo in enumerate(demos):
            if reasoned and name in reasoned[index]:
                chosen.append(dspy.Example(**reasoned[index][name], augmented=True))
            elif all(f in demo for f in sig.input_fields) and any(
                f in demo for f in sig.output_fields
            ):
                chosen.append(dspy.Example(**demo))
        predictor.demos = chosen


def trace_example(
    module: dspy.Module,
    lm: Any,
    adapter: dspy.Adapter,
    program: ProgramSpec,
    metric: MetricSpec,
    example: dict[str, Any],
) -> dict[str, Any]:
    """Run one example; return its record whatever happens (parse failures are recorded)."""
    data = example["data"]
    inputs = {name: data[name] for name in program.input_fields}
    labels = {name: value for name, value in data.items() if name not in inputs}
    started = time.monotonic()
    names = {id(predictor): name for name, predictor in module.named_predictors()}
    error, failed_call = "", None
    with dspy.context(lm=lm, adapter=adapter, trace=[]), track_usage() as usage:
        try:
            prediction = module(**inputs)
            outputs = {name: prediction.get(name) for name in program.output_fields}
        except AdapterParseError as exc:
            prediction, outputs = None, {}
            error = f"the answer did not parse: {_first_line(str(exc))}"
            failed_call = {"raw": exc.lm_response, "parsed": _parsed_part(exc)}
        except Exception as exc:  # an LM or network error: recorded on the example, run goes on
            prediction, outputs = None, {}
            error = f"{type(exc).__name__}: {exc}"
        trace = list(dspy.settings.trace)
    calls = [
        _call_record(names.get(id(pred), ""), pred, call_inputs, call_outputs)
        for pred, call_inputs, call_outputs in trace
    ]
    for call in calls:
        outputs.update({k: v for k, v in call["outputs"].items() if k in program.output_fields})
    if failed_call is not None:
        calls.append(_failed_call_record(module, len(calls), error, failed_call))
    usage_calls, tokens_in, tokens_out = _usage_totals(usage)
    score = metrics.score(metric, labels, outputs) if not error else 0.0
    parsed = not error
    return {
        "example_index": example["index"],
        "inputs": inputs,
        "labels": labels,
        "outputs": _json_safe(outputs),
        "calls": calls,
        "score": score,
        "passed": parsed and score >= metric.threshold,
        "parsed": parsed,
        "error": error,
        "lm_calls": usage_calls,
        "tokens": tokens_in + tokens_out,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "elapsed_s": round(time.monotonic() - started, 3),
    }


def _call_record(name: str, predictor: Any, inputs: dict[str, Any], outputs: Any) -> dict[str, Any]:
    outputs_dict = outputs.toDict() if hasattr(outputs, "toDict") else dict(outputs)
    call = {
        "predictor": name,
        "signature": signature_to_dict(predictor.signature),
        "inputs": _json_safe(dict(inputs)),
        "outputs": _json_safe({k: outputs_dict.get(k) for k in predictor.signature.output_fields}),
        "demos": [_json_safe(_example_dict(d)) for d in predictor.demos],
        "error": "",
    }
    call["messages"] = call_messages(call)
    return call


def _failed_call_record(
    module: dspy.Module, position: int, error: str, failure: dict[str, Any]
) -> dict[str, Any]:
    """The predictor call whose answer did not parse: its raw text, and any fields that did."""
    named = module.named_predictors()
    name, predictor = named[min(position, len(named) - 1)]
    return {
        "predictor": name,
        "signature": signature_to_dict(predictor.signature),
        "inputs": {},
        "outputs": failure["parsed"],
        "demos": [],
        "error": error,
        "raw": str(failure["raw"] or ""),
        "messages": [],
    }


def _parsed_part(exc: AdapterParseError) -> dict[str, Any]:
    parsed = exc.parsed_result
    return _json_safe(dict(parsed)) if isinstance(parsed, dict) else {}


def _example_dict(example: Any) -> dict[str, Any]:
    return example.toDict() if hasattr(example, "toDict") else dict(example)


def _usage_totals(tracker: UsageTracker) -> tuple[int, int, int]:
    """LM calls, input tokens and output tokens recorded in this example's own usage context
    (thread-safe). LiteLLM reports prompt/completion tokens, DSPy's own engines input/output."""
    entries = [entry for per_lm in tracker.usage_data.values() for entry in per_lm]
    tokens_in = sum(int(e.get("input_tokens") or e.get("prompt_tokens") or 0) for e in entries)
    tokens_out = sum(
        int(e.get("output_tokens") or e.get("completion_tokens") or 0) for e in entries
    )
    return len(entries), tokens_in, tokens_out


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "model_dump"):
        return _json_safe(value.model_dump())
    return str(value)
