"""Score one model, prompted one way, on rows: the evaluator behind every comparison.

The same program, the same per-example loop and the same metric as a bootstrap run
(jobs/engine/bootstrap.py), so a candidate's score means what a trace's score means, and equals
``dspy.Evaluate``'s on the same program, rows and metric (tests/engine/test_evaluate.py). What
it adds for a comparison: every row's record is returned whatever happened (unparsed answers
keep their raw text), with its latency and tokens in and out, one at a time as each completes.

Plain Python in, plain data out: the worker stores the records, notebooks and the API can call
:func:`evaluate` directly.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from jobs.engine import metrics
from jobs.engine.bootstrap import run_examples
from jobs.engine.local_lm import check_model, make_lm
from jobs.engine.program_module import build_program
from jobs.engine.programs import ProgramSpec
from jobs.engine.tracing import attach_demos, trace_example
from jobs.engine.training_data import chat_adapter
from jobs.engine.types import MetricSpec, ModelSpec

ResultCallback = Callable[[dict[str, Any]], None]
DEFAULT_THREADS = 8


@dataclass(frozen=True)
class EvaluationTotals:
    done: int
    passed: int
    parsed: int
    score_sum: float
    lm_calls: int
    tokens_in: int
    tokens_out: int

    @property
    def score(self) -> float | None:
        return self.score_sum / self.done if self.done else None


def evaluate(
    *,
    program: ProgramSpec,
    model: ModelSpec,
    rows: Sequence[dict[str, Any]],
    metric: MetricSpec,
    demos: Sequence[dict[str, Any]] = (),
    threads: int = DEFAULT_THREADS,
    skip: Collection[int] = (),
    on_result: ResultCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> EvaluationTotals:
    """Answer each row (``{"index": int, "data": {...}}``) with ``model`` and score it.

    ``demos``: labeled demos every predictor is shown (a teacher "as its run prompted it"); none
    for zero-shot or a fine-tuned student (it was trained without them). The model samples at
    ``model.temperature``. An unusable model fails the call up front."""
    check_model(model)
    return evaluate_with_lm(
        program=program,
        lm=make_lm(model),
        rows=rows,
        metric=metric,
        demos=demos,
        threads=threads,
        skip=skip,
        on_result=on_result,
        should_stop=should_stop,
    )


def evaluate_with_lm(
    *,
    program: ProgramSpec,
    lm: Any,
    rows: Sequence[dict[str, Any]],
    metric: MetricSpec,
    demos: Sequence[dict[str, Any]] = (),
    threads: int = DEFAULT_THREADS,
    skip: Collection[int] = (),
    on_result: ResultCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> EvaluationTotals:
    """:func:`evaluate` with an LM object (any ``dspy.LM``). Rows whose index is in ``skip``
    (finished before a retry) are not answered again."""
    metrics.validate_metric_spec(metric, program.output_fields)
    module = build_program(program)
    attach_demos(module, [dict(d) for d in demos])
    adapter = chat_adapter()
    todo = [row for row in rows if row["index"] not in set(skip)]
    counts: dict[str, Any] = {
        "done": 0,
        "passed": 0,
        "parsed": 0,
        "score_sum": 0.0,
        "lm_calls": 0,
        "tokens_in": 0,
        "tokens_out": 0,
    }

    def record(trace: dict[str, Any]) -> None:
        result = result_record(trace)
        counts["done"] += 1
        counts["passed"] += int(result["passed"])
        counts["parsed"] += int(result["parsed"])
        counts["score_sum"] += result["score"]
        for key in ("lm_calls", "tokens_in", "tokens_out"):
            counts[key] += result[key]
        if on_result is not None:
            on_result(result)

    run_examples(
        lambda row: trace_example(module, lm, adapter, program, metric, row),
        todo,
        threads=threads,
        on_record=record,
        should_stop=should_stop,
    )
    return EvaluationTotals(**counts)


def result_record(trace: dict[str, Any]) -> dict[str, Any]:
    """One row's result from the trace record of its example: what a comparison needs."""
    reasoning = [
        str(call["outputs"]["reasoning"])
        for call in trace["calls"]
        if call.get("outputs", {}).get("reasoning")
    ]
    raw = next((call.get("raw", "") for call in trace["calls"] if call.get("raw")), "")
    return {
        "row_index": trace["example_index"],
        "inputs": trace["inputs"],
        "labels": trace["labels"],
        "outputs": trace["outputs"],
        "reasoning": "\n\n".join(reasoning),
        "raw": raw,
        "score": float(trace["score"]),
        "passed": bool(trace["passed"]),
        "parsed": bool(trace["parsed"]),
        "error": trace["error"],
        "latency_s": trace["elapsed_s"],
        "tokens_in": trace["tokens_in"],
        "tokens_out": trace["tokens_out"],
        "lm_calls": trace["lm_calls"],
    }


def price_per_token(model: ModelSpec) -> tuple[float | None, float | None]:
    """LiteLLM's price table for a LiteLLM model, (input, output) per token; (None, None) when it
    does not know the model, and for local models (their cost is the hardware's)."""
    if model.kind != "litellm":
        return None, None
    import litellm

    entry = litellm.model_cost.get(model.name) or litellm.model_cost.get(
        model.name.split("/", 1)[-1]
    )
    if not entry:
        return None, None
    return entry.get("input_cost_per_token"), entry.get("output_cost_per_token")


def answer(
    *,
    program: ProgramSpec,
    model: ModelSpec,
    inputs: dict[str, Any],
    labels: dict[str, Any] | None = None,
    metric: MetricSpec | None = None,
) -> dict[str, Any]:
    """One input answered by one model (the playground): the result record of :func:`evaluate`;
    ``passed`` is None unless gold ``labels`` and a ``metric`` are given."""
    scored = metric is not None and bool(labels)
    metric = metric or MetricSpec("exact_match", program.output_fields[-1])
    results: list[dict[str, Any]] = []
    evaluate(
        program=program,
        model=model,
        rows=[{"index": 0, "data": {**(labels or {}), **inputs}}],
        metric=metric,
        threads=1,
        on_result=results.append,
    )
    result = results[0]
    if not scored:
        result["passed"] = None
    return result
