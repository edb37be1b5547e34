"""Trace sets: frozen, versioned selections of a run's traces, the training rows built from
them, the fine-tune form's preview, and exports.

A fine-tune trains on a frozen trace set, so its model id traces back to rows and decisions:
each item keeps the trace's decision and edited outputs at freeze time. The rows are exactly
DSPy's (``engine.training_data.build_training_rows``), with reviewers' edits re-rendered through
the same ChatAdapter first. The preview samples the same records the job will train on.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Max, QuerySet
from django.utils.timezone import now

from jobs.models import (
    BootstrapRun,
    FinetuneJob,
    Trace,
    TraceDecision,
    TraceSet,
    TraceSetItem,
)
from jobs.models.runs import effective_outputs
from jobs.services.review import BULK_BATCH, TraceFilter

if TYPE_CHECKING:
    from django.contrib.auth.models import User

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


def record(row: Trace | TraceSetItem) -> dict[str, Any]:
    """A trace's record, or a frozen item's."""
    return item_record(row) if isinstance(row, TraceSetItem) else trace_record(row)


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
    source: QuerySet[TraceSetItem] | QuerySet[Trace]
    outputs: QuerySet[TraceSetItem, tuple[Any, Any]] | QuerySet[Trace, tuple[Any, Any]]
    if trace_set is not None:
        source = trace_set.items.select_related("trace").order_by("example_index")
        count = trace_set.trace_count
        outputs = source.values_list("trace__outputs", "edited_outputs")
    else:
        source = run.traces.for_selection(selection).order_by("example_index")
        count = source.count()
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
    sample = [record(row) for row in source[:TOKEN_SAMPLE_TRACES]]
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
        for field, value in effective_outputs(outputs, edited).items():
            counts.setdefault(field, Counter())[str(value)] += 1
    shown = {field: c.most_common(5) for field, c in counts.items()}
    unbalanced = any(
        len(c) <= 20 and sum(c.values()) >= 10 and c.most_common(1)[0][1] / sum(c.values()) >= 0.8
        for c in counts.values()
    )
    return shown, unbalanced


SELECTION_LABELS = dict(FinetuneJob.Selection.choices)


def selection_counts(run: BootstrapRun) -> dict[str, int]:
    """How many traces each selection (approved, passing, all parsed) would train on."""
    return {
        value: run.traces.for_selection(value).count() for value in FinetuneJob.Selection.values
    }


def freeze_trace_set(
    *,
    run: BootstrapRun,
    user: User,
    selection: str = FinetuneJob.Selection.APPROVED,
    name: str = "",
    trace_filter: TraceFilter | None = None,
) -> TraceSet:
    """Freeze the run's ``selection`` (optionally narrowed by a queue filter) as the next version.

    Each item keeps the trace's decision, approvals and edited outputs at this moment; the
    trace's bootstrap record (inputs, calls) never changes after bootstrap, so set + trace rows
    reproduce the training data exactly, whatever reviews happen later.
    """
    if selection not in FinetuneJob.Selection.values:
        raise ValueError(f"Unknown selection {selection!r}.")
    with transaction.atomic():
        # Lock the run's row, so that concurrent freezes number their versions in order.
        BootstrapRun.objects.select_for_update().filter(pk=run.pk).values_list("pk").first()
        traces: QuerySet[Trace] = run.traces.for_selection(selection)
        if trace_filter is not None and not trace_filter.is_empty:
            traces = trace_filter.apply(traces, user)
        rows = list(
            traces.order_by("example_index").values_list(
                "pk",
                "example_index",
                "review_state",
                "approvals",
                "edited_outputs",
                "reviewed_by",
                "reviewed_at",
            )
        )
        if not rows:
            raise ValueError(
                f"Nothing to freeze: the run has no {SELECTION_LABELS[selection]} traces."
            )
        last_decision = dict(
            TraceDecision.objects.filter(run=run)
            .order_by()
            .values("trace")
            .annotate(m=Max("pk"))
            .values_list("trace", "m")
        )
        version = (run.trace_sets.aggregate(v=Max("version"))["v"] or 0) + 1
        rule: dict[str, Any] = {"selection": selection}
        if trace_filter is not None and not trace_filter.is_empty:
            rule["filter"] = trace_filter.params()
        stamp = now()
        trace_set = TraceSet.objects.create(
            run=run,
            version=version,
            name=name.strip()[:200] or f"{selection} as of {stamp:%Y-%m-%d %H:%M}",
            rule=rule,
            trace_count=len(rows),
            created_by=user,
            created=stamp,
        )
        TraceSetItem.objects.bulk_create(
            (
                TraceSetItem(
                    trace_set=trace_set,
                    trace_id=pk,
                    example_index=index,
                    review_state=state,
                    approvals=approvals,
                    edited_outputs=edited,
                    reviewed_by_id=reviewer,
                    reviewed_at=reviewed_at,
                    last_decision_id=last_decision.get(pk),
                )
                for pk, index, state, approvals, edited, reviewer, reviewed_at in rows
            ),
            batch_size=BULK_BATCH,
        )
    return trace_set


def trace_set_items(trace_set: TraceSet) -> Iterator[TraceSetItem]:
    return (
        trace_set.items.select_related("trace", "reviewed_by")
        .order_by("example_index")
        .iterator(chunk_size=500)
    )


def trace_set_records(trace_set: TraceSet) -> list[dict[str, Any]]:
    return [item_record(item) for item in trace_set_items(trace_set)]


def training_rows(
    trace_set: TraceSet, *, multitask: bool = True, exclude_demos: bool = True
) -> list[dict[str, Any]]:
    """Exactly ``build_training_rows`` on the frozen records (per predictor when not multitask)."""
    return rows_from_records(
        trace_set_records(trace_set), multitask=multitask, exclude_demos=exclude_demos
    )


# --- exports ----------------------------------------------------------------------------------

EXPORT_FORMATS = {"jsonl": "application/jsonl; charset=utf-8", "csv": "text/csv; charset=utf-8"}


def export_filename(trace_set: TraceSet, fmt: str) -> str:
    """The download's name, from server-side values only; ``fmt`` must be an export format."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}")
    run = trace_set.run
    return f"{run.project.slug}-run{run.pk}-set{trace_set.version}.{fmt}"


def export_jsonl(
    trace_set: TraceSet, *, multitask: bool = True, exclude_demos: bool = True
) -> Iterator[str]:
    for row in training_rows(trace_set, multitask=multitask, exclude_demos=exclude_demos):
        yield json.dumps(row, ensure_ascii=False) + "\n"


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_safe(value: Any) -> Any:
    """Cells a spreadsheet would run as a formula get a leading quote (OWASP CSV injection)."""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False)
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        try:
            float(value)
        except ValueError:
            return "'" + value
    return value


def _names(items: Iterable[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.update(dict.fromkeys(item))
    return list(seen)


def export_csv(trace_set: TraceSet) -> Iterator[str]:
    """One row per trace: inputs, gold labels, effective outputs, score, decision."""
    run = trace_set.run
    sample = list(trace_set.items.select_related("trace").order_by("example_index")[:200])
    inputs = _names(i.trace.inputs for i in sample)
    labels = _names(i.trace.labels for i in sample)
    outputs = _names(i.trace.outputs for i in sample)
    writer = csv.writer(_Echo())
    yield writer.writerow(
        [
            "example_index",
            *(f"input:{n}" for n in inputs),
            *(f"label:{n}" for n in labels),
            *(f"output:{n}" for n in outputs),
            "edited",
            "score",
            "passed",
            "error",
            "decision",
            "approvals",
            "reviewed_by",
            "reviewed_at",
            "trace_set",
            "run",
        ]
    )
    for item in trace_set_items(trace_set):
        t = item.trace
        effective = effective_outputs(t.outputs, item.edited_outputs)
        row = [
            item.example_index,
            *(t.inputs.get(n, "") for n in inputs),
            *(t.labels.get(n, "") for n in labels),
            *(effective.get(n, "") for n in outputs),
            "yes" if item.edited_outputs else "no",
            "" if t.score is None else t.score,
            "yes" if t.passed else "no",
            t.error,
            item.review_state,
            item.approvals,
            item.reviewed_by.get_username() if item.reviewed_by else "",
            item.reviewed_at.isoformat() if item.reviewed_at else "",
            f"{trace_set.name} v{trace_set.version}",
            run.pk,
        ]
        yield writer.writerow([_csv_safe(v) for v in row])
