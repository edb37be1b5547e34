"""Training rows from traces, and the fine-tune form's preview of them.

A fine-tune trains on a frozen trace set (review.py freezes one) or, for a job made without one,
on the run's live selection. Either way the rows are exactly DSPy's
(``engine.training_data.build_training_rows``), with reviewers' edits re-rendered through the
same ChatAdapter first. The preview samples the same records the job will train on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobs.models import BootstrapRun, Trace, TraceSet, TraceSetItem

PREVIEW_ROWS = 2
TOKEN_SAMPLE_TRACES = 200
OUTPUT_SAMPLE_TRACES = 5000


def with_edits(record: dict[str, Any], edited_outputs: dict[str, Any] | None) -> dict[str, Any]:
    if not edited_outputs:
        return record
    from jobs.engine.training_data import rerender_trace

    return rerender_trace(record, edited_outputs)


def trace_record(trace: Trace) -> dict[str, Any]:
    """The trace's engine record with today's edits."""
    return with_edits(trace.as_record(), trace.edited_outputs)


def item_record(item: TraceSetItem) -> dict[str, Any]:
    """The trace's engine record with the edits frozen in the set (not today's edits)."""
    return with_edits(item.trace.as_record(), item.edited_outputs)


def rows_from_records(
    records: list[dict[str, Any]], *, multitask: bool = True, exclude_demos: bool = True
) -> list[dict[str, Any]]:
    """One training set for all predictors, or (as DSPy does without multitask) each in turn."""
    from jobs.engine.training_data import build_training_rows

    if multitask:
        return build_training_rows(records, multitask=True, exclude_demos=exclude_demos)
    predictors = max((len(r["calls"]) for r in records), default=0)
    rows: list[dict[str, Any]] = []
    for index in range(predictors):
        rows += build_training_rows(
            records, multitask=False, exclude_demos=exclude_demos, predictor_index=index
        )
    return rows


def preview(
    run: BootstrapRun,
    *,
    selection: str,
    trace_set: TraceSet | None = None,
    multitask: bool,
    exclude_demos: bool,
) -> dict[str, Any]:
    """Traces, ≈ training rows and tokens (chars / 4, from a sample), a couple of rows, and the
    kept output values, for the frozen ``trace_set`` when one is picked, else the live selection."""
    if trace_set is not None:
        source = trace_set.items.select_related("trace").order_by("example_index")
        count, to_record = trace_set.trace_count, item_record
        outputs = source.values_list("trace__outputs", "edited_outputs")
    else:
        source = run.traces.for_selection(selection).order_by("example_index")
        count, to_record = source.count(), trace_record
        outputs = source.values_list("outputs", "edited_outputs")
    result: dict[str, Any] = {
        "trace_set": trace_set,
        "traces": count,
        "rows": 0,
        "tokens": 0,
        "examples": [],
        "error": "",
    }
    if not count:
        return result
    result["outputs"], result["unbalanced"] = output_distribution(outputs[:OUTPUT_SAMPLE_TRACES])
    sample = [to_record(row) for row in source[:TOKEN_SAMPLE_TRACES]]
    try:
        rows = rows_from_records(sample, multitask=multitask, exclude_demos=exclude_demos)
    except Exception as e:  # a trace the adapter cannot render: say so instead of failing the page
        result["error"] = f"could not render training rows: {e}"
        return result
    scale = count / len(sample)
    chars = sum(len(str(m.get("content", ""))) for row in rows for m in row.get("messages", []))
    result.update(
        rows=round(len(rows) * scale), tokens=round(chars / 4 * scale), examples=rows[:PREVIEW_ROWS]
    )
    return result


def output_distribution(
    pairs: Iterable[tuple[dict[str, Any] | None, dict[str, Any] | None]],
) -> tuple[dict[str, list[tuple[str, int]]], bool]:
    """The most common values of each output among (outputs, edited outputs) pairs (a teacher that
    always says "positive" would teach the student to always say it), and whether one dominates."""
    counts: dict[str, Counter[str]] = {}
    for outputs, edited in pairs:
        for field, value in {**(outputs or {}), **(edited or {})}.items():
            counts.setdefault(field, Counter())[str(value)] += 1
    shown = {field: c.most_common(5) for field, c in counts.items()}
    unbalanced = any(
        len(c) <= 20 and sum(c.values()) >= 10 and c.most_common(1)[0][1] / sum(c.values()) >= 0.8
        for c in counts.values()
    )
    return shown, unbalanced
