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
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Max, QuerySet
from django.utils.timezone import now

from jobs.engine.demos import label_key
from jobs.engine.training_plan import TrainingPlan, training_plan
from jobs.engine.types import FinetuneConfig
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
    config: FinetuneConfig | None = None,
    max_label_share: float | None = None,
) -> dict[str, Any]:
    """Traces, ≈ training rows and tokens (chars / 4, from a sample), a couple of rows, the kept
    output values, the metric field's label balance (after ``max_label_share``'s cap, when the
    live selection is frozen with one) and the training plan of ``config`` on these rows; for
    the frozen ``trace_set`` when one is picked, else the live selection."""
    source: QuerySet[TraceSetItem] | QuerySet[Trace]
    outputs: QuerySet[TraceSetItem, tuple[Any, Any]] | QuerySet[Trace, tuple[Any, Any]]
    if trace_set is not None:
        source = trace_set.items.select_related("trace").order_by("example_index")
        count = trace_set.trace_count
        outputs = source.values_list("trace__outputs", "edited_outputs")
        max_label_share = None  # a frozen set keeps its rows (and the cap it was frozen with)
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
        "plan": None,
    }
    if not count:
        return result
    pairs = list(outputs[:OUTPUT_SAMPLE_TRACES])
    result["outputs"], result["unbalanced"] = output_distribution(pairs)
    try:
        balance = label_balance(pairs, run.metric_spec().field, max_share=max_label_share)
    except ValueError as e:  # the cap cannot hold
        result["error"] = str(e)
        return result
    result["balance"] = balance
    sample = [record(row) for row in source[:TOKEN_SAMPLE_TRACES]]
    try:
        rows = rows_from_records(sample, multitask=multitask, exclude_demos=exclude_demos)
    except Exception as e:  # a trace the adapter cannot render: say so instead of failing the page
        result["error"] = f"could not render training rows: {e}"
        return result
    scale = count / len(sample) * (balance.kept / balance.total if balance.total else 1)
    chars = sum(len(str(m.get("content", ""))) for row in rows for m in row.get("messages", []))
    n_rows = round(len(rows) * scale)
    result.update(
        traces_kept=round(count * balance.kept / balance.total) if balance.total else count,
        rows=n_rows,
        tokens=round(chars / 4 * scale),
        examples=rows[:PREVIEW_ROWS],
        plan=training_plan(n_rows, config or FinetuneConfig(base_model="-")),
    )
    return result


def output_distribution(
    pairs: Iterable[tuple[dict[str, Any] | None, dict[str, Any] | None]],
) -> tuple[dict[str, list[tuple[str, int]]], bool]:
    """The most common values of each output among (outputs, edited outputs) pairs (a teacher that
    always says "positive" would teach the student to always say it), and whether one value is
    over :data:`COLLAPSE_SHARE` of some output's values."""
    counts: dict[str, Counter[str]] = {}
    for outputs, edited in pairs:
        for field, value in effective_outputs(outputs, edited).items():
            counts.setdefault(field, Counter())[str(value)] += 1
    shown = {field: c.most_common(5) for field, c in counts.items()}
    unbalanced = any(collapsed(c) for c in counts.values())
    return shown, unbalanced


# --- label balance: no one label may crowd the training rows ----------------------------------

# One label over this share of the rows is a collapsed set: a student trained on it learns to
# answer that label. The fine-tune preview warns, `distill` refuses to train it without --force.
COLLAPSE_SHARE = 0.8
# Under this many rows a share says little: no warning, no refusal.
BALANCE_MIN_ROWS = 10
# The fine-tune form's and distill's default cap on one label's share of the rows: none (a
# warning above COLLAPSE_SHARE). A cap drops the excess rows of the biggest labels when a
# selection is frozen (seeded), recorded in the trace set's rule.
DEFAULT_MAX_LABEL_SHARE: float | None = None


def collapsed(counts: Mapping[str, int]) -> bool:
    """Whether one label is over COLLAPSE_SHARE of at least BALANCE_MIN_ROWS rows."""
    total = sum(counts.values())
    return total >= BALANCE_MIN_ROWS and max(counts.values()) / total > COLLAPSE_SHARE


@dataclass(frozen=True)
class LabelBalance:
    """The metric field's values over a set of traces (after a cap, when one applies)."""

    field: str
    counts: tuple[tuple[str, int], ...]  # label -> rows kept, most common first
    total: int  # rows before the cap
    max_share: float | None = None  # the cap applied, if any
    dropped: tuple[tuple[str, int], ...] = ()  # label -> rows the cap drops

    @property
    def kept(self) -> int:
        return sum(n for _, n in self.counts)

    @property
    def top_label(self) -> str:
        return self.counts[0][0] if self.counts else ""

    @property
    def top_share(self) -> float:
        return self.counts[0][1] / self.kept if self.kept else 0.0

    @property
    def collapsed(self) -> bool:
        return bool(self.counts) and collapsed(dict(self.counts))

    def describe(self) -> str:
        """E.g. "'sports' is 93 % of the topic labels (14 of 15)"."""
        if not self.counts:
            return f"no {self.field} labels"
        return (
            f"{self.top_label!r} is {self.top_share:.0%} of the {self.field} labels "
            f"({self.counts[0][1]} of {self.kept})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "max_share": self.max_share,
            "counts": dict(self.counts),
            "dropped": dict(self.dropped),
        }


def trace_label(outputs: dict[str, Any] | None, edited: dict[str, Any] | None, field: str) -> str:
    """A trace's label: the metric field's value in its effective outputs ("" when missing)."""
    value = effective_outputs(outputs, edited).get(field)
    return "" if value is None else label_key(value)


def capped_counts(counts: Mapping[str, int], max_share: float) -> dict[str, int]:
    """How many rows of each label stay under a cap of ``max_share`` on any one label's share.

    Only the biggest labels lose rows: each label keeps min(count, level), with the highest level
    at which no label is over ``max_share`` of what is kept. ValueError when no level holds (one
    label only, or a cap under 1 / the number of labels).
    """
    if not 0 < max_share <= 1:
        raise ValueError(f"The cap on one label's share must be in (0, 1], not {max_share!r}.")
    if max_share == 1 or not counts:
        return dict(counts)
    for level in range(max(counts.values()), 0, -1):
        if level <= max_share * sum(min(n, level) for n in counts.values()) + 1e-9:
            return {label: min(n, level) for label, n in counts.items()}
    labels = ", ".join(repr(label) for label in sorted(counts))
    raise ValueError(
        f"No label can stay under {max_share:.0%} of the rows: the traces hold "
        f"{len(counts)} label{'s' if len(counts) != 1 else ''} ({labels}); a cap needs more than "
        f"1 / {max_share:g} labels, or more traces of the others."
    )


def label_balance(
    pairs: Iterable[tuple[dict[str, Any] | None, dict[str, Any] | None]],
    field: str,
    *,
    max_share: float | None = None,
) -> LabelBalance:
    """The balance of ``field`` over (outputs, edited outputs) pairs, after ``max_share``'s cap."""
    counts = Counter(trace_label(outputs, edited, field) for outputs, edited in pairs)
    kept = dict(counts) if max_share is None else capped_counts(counts, max_share)
    dropped = {label: counts[label] - n for label, n in kept.items() if counts[label] > n}
    return LabelBalance(
        field=field,
        counts=tuple(sorted(kept.items(), key=lambda item: (-item[1], item[0]))),
        total=sum(counts.values()),
        max_share=max_share,
        dropped=tuple(sorted(dropped.items(), key=lambda item: (-item[1], item[0]))),
    )


def select_capped(
    labelled: Sequence[tuple[int, str]], max_share: float, *, seed: int
) -> tuple[set[int], LabelBalance]:
    """Which of the (key, label) rows a cap keeps: of each label over its capped count, a seeded
    sample (the same keys for the same rows and seed), and the balance after it."""
    by_label: dict[str, list[int]] = {}
    for key, label in labelled:
        by_label.setdefault(label, []).append(key)
    keep = capped_counts({label: len(keys) for label, keys in by_label.items()}, max_share)
    rng = random.Random(seed)
    kept: set[int] = set()
    for label in sorted(by_label):
        keys = sorted(by_label[label])
        kept.update(keys if keep[label] == len(keys) else rng.sample(keys, keep[label]))
    balance = LabelBalance(
        field="",
        counts=tuple(sorted(keep.items(), key=lambda item: (-item[1], item[0]))),
        total=len(labelled),
        max_share=max_share,
        dropped=tuple(
            sorted(
                (
                    (label, len(by_label[label]) - n)
                    for label, n in keep.items()
                    if n < len(by_label[label])
                ),
                key=lambda item: (-item[1], item[0]),
            )
        ),
    )
    return kept, balance


def selection_balance(
    run: BootstrapRun, selection: str, *, max_share: float | None = None
) -> LabelBalance:
    """The metric field's balance over the run's ``selection``, as freezing it with the cap
    ``max_share`` would leave it; ValueError when the cap cannot hold."""
    pairs = run.traces.for_selection(selection).values_list("outputs", "edited_outputs")
    return label_balance(pairs, run.metric_spec().field, max_share=max_share)


# --- the training plan of a frozen set ------------------------------------------------------


def training_row_count(trace_set: TraceSet) -> int:
    """The rows a frozen set trains on: one per predictor call that parsed (build_training_rows),
    whether multitask or not."""
    calls = trace_set.items.values_list("trace__calls", flat=True)
    return sum(
        1
        for trace_calls in calls.iterator(chunk_size=500)
        for call in trace_calls or []
        if not call.get("error")
    )


def job_config(trace_set: TraceSet, config: FinetuneConfig) -> dict[str, Any]:
    """A job's config JSON: the knobs, and the plan they give on the set's rows (a record: the
    worker plans again on the rows it tokenized, and the manifest keeps that plan)."""
    plan: TrainingPlan = training_plan(training_row_count(trace_set), config)
    return {**config.to_dict(), FinetuneConfig.PLAN_KEY: plan.to_dict()}


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
    max_label_share: float | None = None,
    seed: int = 0,
) -> TraceSet:
    """Freeze the run's ``selection`` (optionally narrowed by a queue filter) as the next version.

    Each item keeps the trace's decision, approvals and edited outputs at this moment; the
    trace's bootstrap record (inputs, calls) never changes after bootstrap, so set + trace rows
    reproduce the training data exactly, whatever reviews happen later.

    With ``max_label_share``, no label of the run's metric field keeps more than that share of
    the set: the excess traces of the biggest labels are left out (a sample seeded by ``seed``),
    and the rule records the cap, the seed and what it dropped. ValueError when it cannot hold.
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
        balance: dict[str, Any] | None = None
        if max_label_share is not None:
            rows, balance = _cap_rows(run, traces, rows, max_label_share, seed=seed)
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
        if balance is not None:
            rule["balance"] = balance
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


def _cap_rows(
    run: BootstrapRun,
    traces: QuerySet[Trace],
    rows: list[tuple[Any, ...]],
    max_share: float,
    *,
    seed: int,
) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    """The rows (pk first, edited outputs fifth) that a cap on one label's share keeps, and the
    rule's record of it."""
    field = run.metric_spec().field
    outputs = dict(traces.values_list("pk", "outputs"))
    labelled = [(row[0], trace_label(outputs[row[0]], row[4], field)) for row in rows]
    kept, balance = select_capped(labelled, max_share, seed=seed)
    record = {**balance.to_dict(), "field": field, "seed": seed, "before": len(rows)}
    return [row for row in rows if row[0] in kept], record


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


class EchoWriter:
    """A file-like object whose write() hands the line back (streamed CSV)."""

    def write(self, value: str) -> str:
        return value


def csv_cell(value: Any) -> Any:
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
    writer = csv.writer(EchoWriter())
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
        yield writer.writerow([csv_cell(v) for v in row])
