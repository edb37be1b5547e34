"""Run the teacher program over examples and hand each finished example over as a JSON-safe trace.

This is the loop of ``dspy.teleprompt.bootstrap_trace.bootstrap_trace_data`` (DSPy's trace
machinery: ``dspy.context(trace=[])`` around each example), with what a durable, reviewable
workflow needs on top: every example is recorded, parsed or not (DSPy 3.4.1's own loop crashes on
unparseable answers, or with ``raise_on_error=False`` silently drops them), each record is handed
to ``on_trace`` as soon as it completes, finished examples can be skipped (resume), and a stop
flag is honoured.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import dspy

from jobs.engine import metrics
from jobs.engine.demos import DemoSearch, pick_demos, plan_demo_search, search_demos
from jobs.engine.local_lm import check_model, make_lm
from jobs.engine.program_module import build_program
from jobs.engine.programs import ProgramSpec
from jobs.engine.tracing import attach_demos, trace_example
from jobs.engine.training_data import chat_adapter
from jobs.engine.types import (
    DEMO_STRATEGIES,
    BootstrapConfig,
    BootstrapProgress,
    MetricSpec,
    ModelSpec,
    copies_placeholder,
)

TraceCallback = Callable[[dict[str, Any]], None]


def bootstrap(
    *,
    program: ProgramSpec,
    teacher: ModelSpec,
    examples: Sequence[dict[str, Any]],
    metric: MetricSpec,
    config: BootstrapConfig,
    demos: Sequence[dict[str, Any]] = (),
    skip: Collection[int] = (),
    on_trace: TraceCallback,
    on_progress: Callable[[BootstrapProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    demo_positions: Sequence[int] | None = None,
    on_demo_search: Callable[[DemoSearch], None] | None = None,
) -> BootstrapProgress:
    """Bootstrap ``examples`` (``{"index": int, "data": {...}}``) with the teacher model.

    An unusable teacher (unknown local model, missing API key) fails the whole call up front
    instead of failing every example one by one.
    """
    teacher = config.teacher_for_run(teacher)
    check_model(teacher)
    return bootstrap_with_lm(
        program=program,
        lm=make_lm(teacher),
        examples=examples,
        metric=metric,
        config=config,
        demos=demos,
        skip=skip,
        on_trace=on_trace,
        on_progress=on_progress,
        should_stop=should_stop,
        demo_positions=demo_positions,
        on_demo_search=on_demo_search,
    )


def bootstrap_with_lm(
    *,
    program: ProgramSpec,
    lm: Any,
    examples: Sequence[dict[str, Any]],
    metric: MetricSpec,
    config: BootstrapConfig,
    demos: Sequence[dict[str, Any]] = (),
    skip: Collection[int] = (),
    on_trace: TraceCallback,
    on_progress: Callable[[BootstrapProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    demo_positions: Sequence[int] | None = None,
    on_demo_search: Callable[[DemoSearch], None] | None = None,
) -> BootstrapProgress:
    """:func:`bootstrap` with an LM object (any ``dspy.LM``, e.g. ``DummyLM`` in fast tests).

    The teacher's demos: ``demo_positions`` (positions in ``demos``, in order: a resumed run keeps
    the demos it chose), else chosen by ``config.demo_strategy`` (:func:`choose_demos`); a demo
    search's result goes to ``on_demo_search`` before the first example starts."""
    metrics.validate_metric_spec(metric, program.output_fields)
    module = build_program(program)
    adapter = chat_adapter()
    if demo_positions is not None:
        picked = [demos[p] for p in demo_positions]
    else:
        picked, search = choose_demos(
            program=program, lm=lm, metric=metric, config=config, demos=demos
        )
        if search is not None and on_demo_search is not None:
            on_demo_search(search)
    reasoned = (
        reason_demos(module, lm, adapter, program, metric, picked, threads=config.num_threads)
        if config.reason_demos
        else None
    )
    attach_demos(module, picked, reasoned)
    chosen = list(examples)[: config.limit] if config.limit is not None else list(examples)
    skipped = set(skip)
    todo = [ex for ex in chosen if ex["index"] not in skipped]

    counts = {"done": 0, "passed": 0, "failed": 0, "errored": 0, "lm_calls": 0, "tokens": 0}
    started = time.monotonic()

    def progress() -> BootstrapProgress:
        return BootstrapProgress(total=len(todo), elapsed_s=time.monotonic() - started, **counts)

    def record(trace: dict[str, Any]) -> None:
        counts["done"] += 1
        outcome = "errored" if trace["error"] else ("passed" if trace["passed"] else "failed")
        counts[outcome] += 1
        counts["lm_calls"] += trace["lm_calls"]
        counts["tokens"] += trace["tokens"]
        on_trace(trace)
        if on_progress is not None:
            on_progress(progress())

    run_examples(
        lambda example: best_of_n(module, lm, adapter, program, metric, example, config),
        todo,
        threads=config.num_threads,
        on_record=record,
        should_stop=should_stop,
    )
    return progress()


def run_examples(
    work: Callable[[dict[str, Any]], dict[str, Any]],
    examples: Sequence[dict[str, Any]],
    *,
    threads: int,
    on_record: TraceCallback,
    should_stop: Callable[[], bool] | None = None,
) -> None:
    """``work(example)`` for each example on ``threads`` threads, handing each record to
    ``on_record`` as it completes.

    At most ``threads`` examples are in flight; a new one starts only after should_stop() said
    no, so a stop starts nothing more and at most the in-flight examples still finish. Callbacks
    run here, on the caller's thread, one at a time: a caller that writes each record to a
    database uses its own connection, never one per worker thread."""
    threads = max(1, threads)
    waiting = iter(examples)
    stopping = should_stop is not None and should_stop()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="examples") as pool:
        in_flight: set[Future[dict[str, Any]]] = set()
        while True:
            while (
                not stopping
                and len(in_flight) < threads
                and (example := next(waiting, None)) is not None
            ):
                in_flight.add(pool.submit(work, example))
            if not in_flight:
                break
            finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                on_record(future.result())  # an exception here is a bug in our code: surface it
            stopping = stopping or (should_stop is not None and should_stop())


def choose_demos(
    *,
    program: ProgramSpec,
    lm: Any,
    metric: MetricSpec,
    config: BootstrapConfig,
    demos: Sequence[dict[str, Any]],
) -> tuple[list[dict[str, Any]], DemoSearch | None]:
    """The teacher's labeled demos by ``config.demo_strategy``, and the search that chose them
    ("stratified_search"; None for "random", or when no demos are asked for)."""
    if config.demo_strategy not in DEMO_STRATEGIES:
        raise ValueError(
            f"unknown demo strategy {config.demo_strategy!r}; expected one of "
            + ", ".join(DEMO_STRATEGIES)
        )
    if config.demo_strategy == "random" or config.num_demos <= 0 or not demos:
        return pick_demos(demos, config.num_demos, config.demo_seed), None
    candidates, sample = plan_demo_search(
        demos,
        metric.field,
        k=config.num_demos,
        n_candidates=config.demo_candidates,
        n_sample=config.demo_search_rows,
        seed=config.demo_seed,
    )
    search = search_demos(
        program=program,
        lm=lm,
        rows=demos,
        candidates=candidates,
        sample=sample,
        metric=metric,
        threads=config.num_threads,
        seed=config.demo_seed,
    )
    return [demos[p] for p in search.chosen_demos], search


def reason_demos(
    module: dspy.Module,
    lm: Any,
    adapter: dspy.Adapter,
    program: ProgramSpec,
    metric: MetricSpec,
    demos: list[dict[str, Any]],
    *,
    threads: int,
) -> list[dict[str, dict[str, Any]]]:
    """DSPy's BootstrapFewShot step on the labeled demos: the teacher answers each demo, shown the
    others; an answer that parses, passes the metric and does not copy the placeholder gives that
    demo the teacher's own calls, reasoning included. For each demo: {predictor name: the call's
    inputs and outputs}, or {} where the demo stays labeled."""

    def answer(index: int) -> dict[str, Any]:
        copy = module.deepcopy()
        attach_demos(copy, demos[:index] + demos[index + 1 :])
        return trace_example(
            copy, lm, adapter, program, metric, {"index": index, "data": demos[index]}
        )

    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="demo") as pool:
        records = list(pool.map(answer, range(len(demos))))
    reasoned = []
    for record in records:
        calls = {
            call["predictor"]: {**call["inputs"], **call["outputs"]} for call in record["calls"]
        }
        copied = any(copies_placeholder(call.values()) for call in calls.values())
        reasoned.append(calls if record["passed"] and not copied else {})
    return reasoned


def best_of_n(
    module: dspy.Module,
    lm: Any,
    adapter: dspy.Adapter,
    program: ProgramSpec,
    metric: MetricSpec,
    example: dict[str, Any],
    config: BootstrapConfig,
) -> dict[str, Any]:
    """The example's trace; while it fails, up to ``config.retries`` more attempts, each a fresh
    sample at ``config.retry_temperature`` (a new ``rollout_id``, as DSPy's BootstrapFewShot
    rounds: no cache hit). The first passing attempt is kept (the last one when none passes);
    ``attempt`` says which, ``attempts`` holds the earlier ones, and the LM calls, tokens and
    time count them all."""
    record = trace_example(module, lm, adapter, program, metric, example)
    earlier: list[dict[str, Any]] = []
    for attempt in range(1, max(0, config.retries) + 1):
        if record["passed"]:
            break
        earlier.append(_attempt_summary(record))
        hotter = lm.copy(rollout_id=attempt, temperature=config.retry_temperature)
        again = trace_example(module, hotter, adapter, program, metric, example)
        for key in ("lm_calls", "tokens", "tokens_in", "tokens_out", "elapsed_s"):
            again[key] = again[key] + record[key]
        record = again
    record["elapsed_s"] = round(record["elapsed_s"], 3)
    record["attempt"] = len(earlier) + 1
    record["attempts"] = earlier
    return record


def _attempt_summary(record: dict[str, Any]) -> dict[str, Any]:
    """What a failed attempt left: its answer (or raw text), score and error."""
    raw = next((call.get("raw", "") for call in record["calls"] if call.get("raw")), "")
    return {
        "outputs": record["outputs"],
        "score": record["score"],
        "parsed": record["parsed"],
        "error": record["error"],
        "raw": raw[:2000],
    }
