"""Re-scoring a run offline: every trace is stored, so a new metric (or threshold) scores the
teacher's stored answers again without calling the teacher.

``preview`` says which traces the new metric would keep or drop and the new label balance;
``apply`` makes it the run's metric as a new version: each trace's earlier score stays in its
``score_history`` and the run's earlier metric in ``metric_history``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils.timezone import now

from jobs.engine import metrics
from jobs.engine.comparison import answer_key
from jobs.engine.types import MetricSpec
from jobs.models import BootstrapRun, Trace
from jobs.services import runs

if TYPE_CHECKING:
    from django.contrib.auth.models import User

CHUNK = 2000
SHOWN = 20


@dataclass
class Preview:
    """What the new metric would change, before anything is written."""

    metric: MetricSpec
    traces: int = 0
    passed_before: int = 0
    passed_after: int = 0
    newly_kept: list[int] = field(default_factory=list)  # example indices, first SHOWN
    newly_dropped: list[int] = field(default_factory=list)
    kept_count: int = 0  # how many newly kept in all
    dropped_count: int = 0
    balance_before: list[tuple[str, int]] = field(default_factory=list)  # passing answers by label
    balance_after: list[tuple[str, int]] = field(default_factory=list)


def _new_score(metric: MetricSpec, trace: dict[str, Any]) -> tuple[float, bool]:
    """The metric on the teacher's stored answer; an unparsed or errored trace stays failed."""
    if not trace["parsed"] or trace["error"]:
        return 0.0, False
    value = metrics.score(metric, trace["labels"], trace["outputs"])
    return value, value >= metric.threshold


def _stored(run: BootstrapRun) -> Any:
    return (
        run.traces.order_by("pk")
        .values("pk", "example_index", "labels", "outputs", "parsed", "error", "passed", "score")
        .iterator(chunk_size=CHUNK)
    )


def preview(run: BootstrapRun, metric: MetricSpec) -> Preview:
    """Score every stored answer with ``metric``; no LM call, nothing written."""
    metrics.validate_metric_spec(metric, run.program_version.to_spec().output_fields)
    result = Preview(metric=metric)
    before: Counter[str] = Counter()
    after: Counter[str] = Counter()
    for trace in _stored(run):
        _score, passed = _new_score(metric, trace)
        answer = answer_key(trace["outputs"].get(metric.field))
        result.traces += 1
        if trace["passed"]:
            result.passed_before += 1
            before[answer] += 1
        if passed:
            result.passed_after += 1
            after[answer] += 1
        if passed and not trace["passed"]:
            result.kept_count += 1
            if len(result.newly_kept) < SHOWN:
                result.newly_kept.append(trace["example_index"])
        elif trace["passed"] and not passed:
            result.dropped_count += 1
            if len(result.newly_dropped) < SHOWN:
                result.newly_dropped.append(trace["example_index"])
    result.balance_before = before.most_common()
    result.balance_after = after.most_common()
    return result


def apply(run: BootstrapRun, metric: MetricSpec, user: User) -> BootstrapRun:
    """Make ``metric`` the run's metric, version n+1: every trace scored again from its stored
    answer (its earlier score kept in score_history), the counters refreshed. Refused while the
    run is still bootstrapping (new traces would be scored with the old metric)."""
    metrics.validate_metric_spec(metric, run.program_version.to_spec().output_fields)
    with transaction.atomic():
        locked = BootstrapRun.objects.select_for_update().get(pk=run.pk)
        if locked.is_active:
            raise ValueError("Re-score once the run has ended: it is still bootstrapping.")
        version = locked.metric_version
        history = dict(run.traces.values_list("pk", "score_history").iterator(CHUNK))
        changed: list[Trace] = []
        for trace in _stored(run):
            score, passed = _new_score(metric, trace)
            earlier = {"version": version, "score": trace["score"], "passed": trace["passed"]}
            changed.append(
                Trace(
                    pk=trace["pk"],
                    score=score,
                    passed=passed,
                    score_history=[*history[trace["pk"]], earlier],
                )
            )
        Trace.objects.bulk_update(changed, ["score", "passed", "score_history"], batch_size=500)
        BootstrapRun.objects.filter(pk=run.pk).update(
            metric=metric.to_dict(),
            metric_version=version + 1,
            metric_history=[
                *locked.metric_history,
                {
                    "version": version,
                    "metric": locked.metric,
                    "passed": locked.passed,
                    "by": user.get_username(),
                    "at": now().isoformat(),
                },
            ],
            updated=now(),
        )
        runs.refresh_run_counts(run)
    run.refresh_from_db()
    return run
