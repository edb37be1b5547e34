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

from collections.abc import Callable, Collection, Mapping, Sequence
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
    totals = _evaluate_lms(
        program=program,
        lms={"": (lm, demos)},
        rows=rows,
        metric=metric,
        threads=threads,
        skip={"": skip},
        on_result=(lambda _key, result: on_result(result)) if on_result is not None else None,
        should_stop=should_stop,
    )
    return totals[""]


@dataclass(frozen=True)
class Candidate:
    """One model, prompted one way, in :func:`evaluate_candidates`."""

    key: str
    model: ModelSpec
    demos: Sequence[dict[str, Any]] = ()


def evaluate_candidates(
    *,
    program: ProgramSpec,
    candidates: Sequence[Candidate],
    rows: Sequence[dict[str, Any]],
    metric: MetricSpec,
    threads: int = DEFAULT_THREADS,
    skip: Mapping[str, Collection[int]] | None = None,
    on_result: Callable[[str, dict[str, Any]], None] | None = None,
    on_error: Callable[[str, Exception], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, EvaluationTotals]:
    """Every candidate on the same rows at once, ``threads`` rows each in flight: local
    candidates of one model share its continuous batch, and a slow candidate does not wait for
    the others to finish. Results reach ``on_result(key, result)`` as they complete (on the
    caller's thread). A candidate whose model cannot be used goes to ``on_error(key, exc)`` and
    the others still run (without ``on_error``, it raises)."""
    lms: dict[str, tuple[Any, Sequence[dict[str, Any]]]] = {}
    for candidate in candidates:
        try:
            check_model(candidate.model)
            lms[candidate.key] = (make_lm(candidate.model), candidate.demos)
        except Exception as exc:
            if on_error is None:
                raise
            on_error(candidate.key, exc)
    return _evaluate_lms(
        program=program,
        lms=lms,
        rows=rows,
        metric=metric,
        threads=threads,
        skip=skip or {},
        on_result=on_result,
        should_stop=should_stop,
    )


def _evaluate_lms(
    *,
    program: ProgramSpec,
    lms: Mapping[str, tuple[Any, Sequence[dict[str, Any]]]],
    rows: Sequence[dict[str, Any]],
    metric: MetricSpec,
    threads: int,
    skip: Mapping[str, Collection[int]],
    on_result: Callable[[str, dict[str, Any]], None] | None,
    should_stop: Callable[[], bool] | None,
) -> dict[str, EvaluationTotals]:
    """The loop: each (LM, demos) by key answers each row it has not answered, row by row across
    the keys, ``threads`` per key in flight."""
    metrics.validate_metric_spec(metric, program.output_fields)
    adapter = chat_adapter()
    modules = {}
    for key, (_lm, demos) in lms.items():
        modules[key] = build_program(program)
        attach_demos(modules[key], [dict(d) for d in demos])
    finished = {key: set(skip.get(key, ())) for key in lms}
    todo = [
        {"key": key, "row": row} for row in rows for key in lms if row["index"] not in finished[key]
    ]
    counts: dict[str, dict[str, Any]] = {
        key: {
            "done": 0,
            "passed": 0,
            "parsed": 0,
            "score_sum": 0.0,
            "lm_calls": 0,
            "tokens_in": 0,
            "tokens_out": 0,
        }
        for key in lms
    }

    def work(job: dict[str, Any]) -> dict[str, Any]:
        key = job["key"]
        trace = trace_example(modules[key], lms[key][0], adapter, program, metric, job["row"])
        return {"key": key, "result": result_record(trace)}

    def record(done: dict[str, Any]) -> None:
        key, result = done["key"], done["result"]
        tally = counts[key]
        tally["done"] += 1
        tally["passed"] += int(result["passed"])
        tally["parsed"] += int(result["parsed"])
        tally["score_sum"] += result["score"]
        for name in ("lm_calls", "tokens_in", "tokens_out"):
            tally[name] += result[name]
        if on_result is not None:
            on_result(key, result)

    run_examples(
        work,
        todo,
        threads=max(1, threads) * max(1, len(lms)),
        on_record=record,
        should_stop=should_stop,
    )
    return {key: EvaluationTotals(**tally) for key, tally in counts.items()}


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
