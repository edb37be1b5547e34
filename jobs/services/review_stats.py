"""The review page's numbers: what a score threshold keeps, the score histogram, label balance."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db.models import (
    Case,
    Count,
    F,
    Max,
    Min,
    Q,
    QuerySet,
    When,
)
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce, Floor

from jobs.models import (
    BootstrapRun,
    Trace,
)
from jobs.values import parse_float

if TYPE_CHECKING:
    pass

LOPSIDED = 0.8  # one class above this share of the kept traces draws a warning
HISTOGRAM_BINS = 20
BALANCE_TOP = 8

State = Trace.ReviewState


def kept_at(run: BootstrapRun, threshold: float) -> QuerySet[Trace]:
    """What a threshold keeps: parsed, not rejected, score ≥ threshold."""
    return run.traces.filter(parsed=True, score__gte=threshold).exclude(review_state=State.REJECTED)


@dataclass
class Bin:
    lo: float
    hi: float
    count: int
    kept: bool
    x: float = 0.0
    y: float = 0.0
    width: float = 0.0
    height: float = 0.0


@dataclass
class Histogram:
    bins: list[Bin]
    lo: float
    hi: float
    threshold: float
    total: int
    width: int = 600
    height: int = 140
    marker_x: float = 0.0
    step: float = 0.01  # the threshold slider's step
    ticks: list[tuple[float, str]] = field(default_factory=list)


def score_histogram(
    run: BootstrapRun, threshold: float, *, bins: int = HISTOGRAM_BINS
) -> Histogram:
    """Scores of the parsed traces in ``bins`` equal bins over [min(0, lowest), max(1, highest)]."""
    scored = run.traces.filter(parsed=True).exclude(score=None)
    bounds = scored.aggregate(lo=Min("score"), hi=Max("score"))
    lo = min(0.0, bounds["lo"] if bounds["lo"] is not None else 0.0)
    hi = max(1.0, bounds["hi"] if bounds["hi"] is not None else 1.0)
    step = (hi - lo) / bins
    counts = dict(
        scored.annotate(b=Floor((F("score") - lo) / step))
        .order_by()
        .values("b")
        .annotate(n=Count("pk"))
        .values_list("b", "n")
    )
    per_bin = [0] * bins
    for b, n in counts.items():
        per_bin[min(bins - 1, max(0, int(b)))] += n
    hist = Histogram(
        bins=[], lo=lo, hi=hi, threshold=threshold, total=sum(per_bin), step=(hi - lo) / 100
    )
    top = max(per_bin) or 1
    plot_h = hist.height - 20
    bar_w = hist.width / bins
    for i, n in enumerate(per_bin):
        b_lo = lo + i * step
        h = 0 if n == 0 else max(1.5, plot_h * n / top)
        hist.bins.append(
            Bin(
                lo=b_lo,
                hi=b_lo + step,
                count=n,
                kept=b_lo + step > threshold,
                x=i * bar_w + 1,
                y=plot_h - h,
                width=bar_w - 2,
                height=h,
            )
        )
    hist.marker_x = max(0.0, min(hist.width, (threshold - lo) / (hi - lo) * hist.width))
    hist.ticks = [
        ((v - lo) / (hi - lo) * hist.width, f"{v:g}") for v in (lo, lo + (hi - lo) / 2, hi)
    ]
    return hist


@dataclass
class Balance:
    name: str
    total: int
    values: list[tuple[str, int, float]]  # value, count, share
    other: int = 0
    distinct: int = 0

    @property
    def top_share(self) -> float:
        return self.values[0][2] if self.values else 0.0

    @property
    def lopsided(self) -> bool:
        return self.total > 0 and self.top_share > LOPSIDED


def _distribution(name: str, counts: Counter[str | None]) -> Balance:
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], "" if kv[0] is None else str(kv[0])))
    total = sum(counts.values())
    values = [("∅" if v is None else str(v), n, n / total) for v, n in rows[:BALANCE_TOP]]
    return Balance(
        name=name,
        total=total,
        values=values,
        other=sum(n for _, n in rows[BALANCE_TOP:]),
        distinct=len(rows),
    )


def balance(run: BootstrapRun, traces: QuerySet[Trace]) -> dict[str, Any]:
    """The distribution of gold labels and of the teacher's (effective) outputs for the metric's
    field, from one grouped scan of (label, output) pairs."""
    field_name = (run.metric or {}).get("field", "")
    if not field_name:
        return {"field": "", "labels": None, "outputs": None}
    teacher = KeyTextTransform(field_name, "outputs")
    output = Case(
        When(edited=True, then=Coalesce(KeyTextTransform(field_name, "edited_outputs"), teacher)),
        default=teacher,
    )
    pairs = (
        traces.order_by()
        .annotate(label_value=KeyTextTransform(field_name, "labels"), output_value=output)
        .values("label_value", "output_value")
        .annotate(n=Count("pk"))
    )
    labels: Counter[str | None] = Counter()
    outputs: Counter[str | None] = Counter()
    for row in pairs:
        labels[row["label_value"]] += row["n"]
        outputs[row["output_value"]] += row["n"]
    return {
        "field": field_name,
        "labels": _distribution("gold labels", labels),
        "outputs": _distribution("teacher outputs", outputs),
    }


def threshold_summary(run: BootstrapRun, threshold: float) -> dict[str, Any]:
    at = Q(score__gte=threshold)
    # WHERE holds no score range, so the count reads trace_review_cover_idx alone.
    counts = run.traces.filter(parsed=True).aggregate(
        kept=Count("pk", filter=at & ~Q(review_state=State.REJECTED)),
        n_approved=Count("pk", filter=at & Q(review_state=State.APPROVED)),
        to_approve=Count("pk", filter=at & Q(review_state=State.UNREVIEWED, passed=True)),
    )
    counts["approved"] = counts.pop("n_approved")
    return {
        "threshold": threshold,
        "histogram": score_histogram(run, threshold),
        "balance": balance(run, kept_at(run, threshold)),
        **counts,
    }


def default_threshold(run: BootstrapRun) -> float:
    value = parse_float((run.metric or {}).get("threshold"))
    return 1.0 if value is None else value
