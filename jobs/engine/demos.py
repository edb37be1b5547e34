"""Choosing the teacher's labeled demos by measurement, not by chance.

Random demos can miss labels, and their order matters (measured: a 135M teacher scored 47 % or
97 % on held-out rows depending only on its demos' order): candidate demo sets are
stratified over the metric field's gold values, and a small search scores each candidate (and a
shuffled order of the best) with the teacher on a held sample of train rows, keeping the best. This
is the idea of DSPy's ``BootstrapFewShotWithRandomSearch``, on our own stored-trace loop.

Demos and sample rows are named by their position in the ``rows`` handed in; everything returned is
plain data.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

from jobs.engine.programs import ProgramSpec
from jobs.engine.types import MetricSpec

# Stratify when the gold values are at most this many (or at most k): every label is represented.
FEW_LABELS = 10


def pick_demos(rows: Sequence[dict[str, Any]], k: int, seed: int) -> list[dict[str, Any]]:
    """k labeled demos from the train split, chosen with a seed (demo strategy "random")."""
    if k <= 0 or not rows:
        return []
    rows = list(rows)
    return random.Random(seed).sample(rows, min(k, len(rows)))


def label_key(value: Any) -> str:
    """A gold value as a grouping key (JSON for anything that is not a string)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def stratified_demo_sets(
    rows: Sequence[dict[str, Any]], label_field: str, k: int, n_sets: int, seed: int
) -> list[list[int]]:
    """Up to ``n_sets`` distinct sets of ``k`` row positions, deterministic by ``seed``.

    With few distinct gold values in ``label_field`` (at most k, or at most :data:`FEW_LABELS`),
    the sets are stratified: with at most k values every set holds every value (as evenly as the
    rows allow); with more values than k, each set takes k different values, the least used so far
    first, so the sets between them cover every value. Otherwise the sets are plain seeded samples.
    Fewer sets come back when the rows do not allow ``n_sets`` distinct ones.
    """
    if k <= 0 or n_sets <= 0 or not rows:
        return []
    k = min(k, len(rows))
    rng = random.Random(seed)
    groups: dict[str, list[int]] = {}
    for position, row in enumerate(rows):
        groups.setdefault(label_key(row.get(label_field)), []).append(position)
    label_of = {p: label for label, positions in groups.items() for p in positions}
    stratify = len(groups) <= max(k, FEW_LABELS)
    uses = dict.fromkeys(groups, 0)
    sets: list[list[int]] = []
    seen: set[frozenset[int]] = set()
    for _attempt in range(n_sets * 10):
        if len(sets) >= n_sets:
            break
        if stratify:
            chosen = _stratified_set(groups, k, rng, uses)
        else:
            chosen = rng.sample(range(len(rows)), k)
        if frozenset(chosen) in seen:
            continue
        seen.add(frozenset(chosen))
        sets.append(chosen)
        for position in chosen:
            uses[label_of[position]] += 1
    return sets


def _stratified_set(
    groups: dict[str, list[int]], k: int, rng: random.Random, uses: dict[str, int]
) -> list[int]:
    """k positions taken round-robin over the labels (least used first), in a shuffled order."""
    labels = sorted(groups, key=lambda label: (uses[label], rng.random()))
    pools = {label: rng.sample(groups[label], len(groups[label])) for label in labels}
    chosen: list[int] = []
    depth = 0
    while len(chosen) < k:
        for label in labels:
            if depth < len(pools[label]) and len(chosen) < k:
                chosen.append(pools[label][depth])
        depth += 1
    rng.shuffle(chosen)
    return chosen


@dataclass(frozen=True)
class DemoCandidate:
    """One demo set, in the order the teacher sees it, and how the teacher did with it."""

    demos: tuple[int, ...]  # row positions
    labels: tuple[Any, ...]  # their gold values in the metric field
    score: float | None = None  # mean metric score on the held sample; None: not scored
    passed: int = 0
    parsed: int = 0
    rows: int = 0  # sample rows scored
    reordered_from: int | None = None  # a shuffled order of that candidate

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DemoSearch:
    """The candidates, the held sample they were scored on, and the one chosen."""

    label_field: str
    sample: tuple[int, ...]  # row positions, never among any candidate's demos
    candidates: tuple[DemoCandidate, ...]
    chosen: int
    lm_calls: int = 0
    tokens: int = 0

    @property
    def chosen_demos(self) -> tuple[int, ...]:
        return self.candidates[self.chosen].demos if self.candidates else ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "label_field": self.label_field,
            "sample": list(self.sample),
            "candidates": [
                {**c.to_dict(), "demos": list(c.demos), "labels": list(c.labels)}
                for c in self.candidates
            ],
            "chosen": self.chosen,
            "lm_calls": self.lm_calls,
            "tokens": self.tokens,
        }


def plan_demo_search(
    rows: Sequence[dict[str, Any]],
    label_field: str,
    *,
    k: int,
    n_candidates: int,
    n_sample: int,
    seed: int,
) -> tuple[list[list[int]], list[int]]:
    """(candidate demo sets, held sample): the sample (itself stratified) is taken first and no
    candidate uses its rows; with few labels, one row of each label stays out of the sample so the
    demos can still show it. With too few rows for both, the sample is empty."""
    groups: dict[str, list[int]] = {}
    for position, row in enumerate(rows):
        groups.setdefault(label_key(row.get(label_field)), []).append(position)
    rng = random.Random(seed)
    kept = (
        {rng.choice(group) for group in groups.values()}
        if len(groups) <= max(k, FEW_LABELS)
        else set()
    )
    pool = [p for p in range(len(rows)) if p not in kept]
    n_sample = min(n_sample, len(rows) - k, len(pool))
    if n_sample < 1 or n_candidates < 1:
        return stratified_demo_sets(rows, label_field, k, 1, seed), []
    picked = stratified_demo_sets([rows[p] for p in pool], label_field, n_sample, 1, seed + 1)[0]
    sample = sorted(pool[p] for p in picked)
    held = set(sample)
    rest = [p for p in range(len(rows)) if p not in held]
    sets = stratified_demo_sets([rows[p] for p in rest], label_field, k, n_candidates, seed)
    return [[rest[p] for p in demo_set] for demo_set in sets], sample


def search_demos(
    *,
    program: ProgramSpec,
    lm: Any,
    rows: Sequence[dict[str, Any]],
    candidates: Sequence[Sequence[int]],
    sample: Sequence[int],
    metric: MetricSpec,
    threads: int = 1,
    seed: int = 0,
) -> DemoSearch:
    """Score each candidate demo set with the teacher on the ``sample`` rows, then a shuffled order
    of the best; choose the best by (passed, mean score), the earlier on a tie (so a reordering
    wins only when it does strictly better). ``lm``: any dspy LM."""
    from jobs.engine.program_module import build_program
    from jobs.engine.tracing import attach_demos, trace_example
    from jobs.engine.training_data import chat_adapter

    module = build_program(program)
    adapter = chat_adapter()
    label_field = metric.field
    totals = {"lm_calls": 0, "tokens": 0}

    def labels(demo_set: Sequence[int]) -> tuple[Any, ...]:
        return tuple(rows[p].get(label_field) for p in demo_set)

    def score(demo_sets: Sequence[Sequence[int]]) -> list[DemoCandidate]:
        modules = []
        for demo_set in demo_sets:
            copy = module.deepcopy()
            attach_demos(copy, [dict(rows[p]) for p in demo_set])
            modules.append(copy)
        jobs = [(i, s) for i in range(len(demo_sets)) for s in sample]
        with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="demos") as pool:
            records = list(
                pool.map(
                    lambda job: trace_example(
                        modules[job[0]],
                        lm,
                        adapter,
                        program,
                        metric,
                        {"index": job[1], "data": rows[job[1]]},
                    ),
                    jobs,
                )
            )
        scored = []
        for i, demo_set in enumerate(demo_sets):
            mine = [r for (j, _s), r in zip(jobs, records, strict=True) if j == i]
            scored.append(
                DemoCandidate(
                    demos=tuple(demo_set),
                    labels=labels(demo_set),
                    score=round(sum(r["score"] for r in mine) / len(mine), 4) if mine else None,
                    passed=sum(1 for r in mine if r["passed"]),
                    parsed=sum(1 for r in mine if r["parsed"]),
                    rows=len(mine),
                )
            )
        totals["lm_calls"] += sum(r["lm_calls"] for r in records)
        totals["tokens"] += sum(r["tokens"] for r in records)
        return scored

    def rank(c: DemoCandidate) -> tuple[int, float]:
        return (c.passed, c.score or 0.0)

    if not candidates:
        return DemoSearch(label_field, tuple(sample), (), 0)
    if not sample:  # nothing held back to measure with: the first (stratified) set, unscored
        only = DemoCandidate(demos=tuple(candidates[0]), labels=labels(candidates[0]))
        return DemoSearch(label_field, (), (only,), 0)
    scored = score(candidates)
    best = max(range(len(scored)), key=lambda i: rank(scored[i]))  # the first of equals
    chosen = best
    order = list(scored[best].demos)
    rng = random.Random(seed)
    for _try in range(10):
        if len(order) < 2:
            break
        rng.shuffle(order)
        if tuple(order) != scored[best].demos:
            again = score([order])[0]
            scored.append(replace(again, reordered_from=best))
            if rank(again) > rank(scored[best]):
                chosen = len(scored) - 1
            break
    return DemoSearch(
        label_field=label_field,
        sample=tuple(sample),
        candidates=tuple(scored),
        chosen=chosen,
        lm_calls=totals["lm_calls"],
        tokens=totals["tokens"],
    )
