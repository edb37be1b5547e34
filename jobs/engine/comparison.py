"""Stored evaluation results turned into the comparison the product shows.

An evaluation scores several candidates (a model and how it is prompted) on the same trainset rows.
From their stored per-row results this module computes each candidate's summary (pass rate with a
Wilson interval, latency, tokens, cost, the spread of its answers and whether it collapsed to one
answer), a paired test of each candidate against the teacher on the rows both answered (exact
McNemar), confusion matrices for classification, and the row filters of the comparison page.

Plain data in, frozen dataclasses out; every ``to_dict()`` is JSON-safe. Stdlib only.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from jobs.engine.metrics import as_text

# One answer above this share of a candidate's parsed answers (with at least COLLAPSE_MIN_ANSWERS
# of them) means it may have collapsed to one label.
COLLAPSE_SHARE = 0.8
COLLAPSE_MIN_ANSWERS = 5
SIGNIFICANCE = 0.05
OTHER = "(other)"
DISAGREEMENT_KINDS = ("disagree", "a_wrong_b_right", "a_right_b_wrong", "both_wrong", "all")
# (a passed, b passed) pairs each kind keeps ("all" keeps every row).
_OUTCOMES: dict[str, frozenset[tuple[bool, bool]]] = {
    "disagree": frozenset({(True, False), (False, True)}),
    "a_wrong_b_right": frozenset({(False, True)}),
    "a_right_b_wrong": frozenset({(True, False)}),
    "both_wrong": frozenset({(False, False)}),
}


def _plain(value: object) -> Any:
    """JSON-safe data: tuples become lists, dataclasses their ``to_dict()``."""
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    to_dict = getattr(value, "to_dict", None)
    return to_dict() if callable(to_dict) else value


def _as_dict(obj: Any, **extra: Any) -> dict[str, Any]:
    """A dataclass's fields, and ``extra`` values, as JSON-safe data."""
    plain: dict[str, Any] = _plain({f.name: getattr(obj, f.name) for f in fields(obj)} | extra)
    return plain


@dataclass(frozen=True)
class CandidateInfo:
    """A candidate as the comparison needs it; prices are per token, None when unknown."""

    key: str
    label: str
    role: str  # "teacher", "base", "student" or "model"
    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None

    @property
    def short_name(self) -> str:
        """The role, or the label for a plain model: how sentences name the candidate."""
        return self.label if self.role == "model" else self.role


@dataclass(frozen=True)
class ResultRow:
    """One candidate's result on one row; ``answer`` is None when the output did not parse."""

    row_index: int
    score: float
    passed: bool
    parsed: bool = True
    latency_s: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    answer: Any = None
    gold: Any = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], field: str) -> ResultRow:
        """From a stored result's values; ``field`` is the metric's output field."""
        parsed = bool(data.get("parsed", True))
        outputs = data.get("outputs") or {}
        labels = data.get("labels") or {}
        return cls(
            row_index=int(data["row_index"]),
            score=float(data.get("score") or 0.0),
            passed=bool(data.get("passed")),
            parsed=parsed,
            latency_s=float(data.get("latency_s") or 0.0),
            tokens_in=int(data.get("tokens_in") or 0),
            tokens_out=int(data.get("tokens_out") or 0),
            answer=outputs.get(field) if parsed else None,
            gold=labels.get(field),
        )


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (0.0, 1.0) when n is 0."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, center - half), min(1.0, center + half))


def mean_interval(values: Sequence[float], z: float = 1.96) -> tuple[float, float, float]:
    """Mean and a normal-approximation interval clipped to [0, 1] (scores lie in [0, 1]).

    With fewer than two values there is no spread to measure: the interval is (0.0, 1.0), and the
    mean of no values is 0.0.
    """
    if not values:
        return (0.0, 0.0, 1.0)
    mean = statistics.fmean(values)
    if len(values) < 2:
        return (mean, 0.0, 1.0)
    half = z * statistics.stdev(values) / math.sqrt(len(values))
    return (mean, max(0.0, mean - half), min(1.0, mean + half))


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs (binomial, p = 1/2), at most 1."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / (1 << n))


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation, as numpy's default; None if empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def answer_key(value: Any) -> str:
    """How answers and labels are grouped: the metric's text form (metrics.as_text), stripped,
    casefolded, inner whitespace collapsed; None is ""."""
    if value is None:
        return ""
    return " ".join(as_text(value).casefold().split())


@dataclass(frozen=True)
class CandidateSummary:
    """One candidate over all its results. Rates are 0.0 and latencies None without results."""

    key: str
    label: str
    role: str
    n: int
    passed: int
    pass_rate: float
    pass_ci: tuple[float, float]
    score_mean: float
    score_ci: tuple[float, float]
    parse_failures: int
    latency_p50: float | None
    latency_p95: float | None
    tokens_in_per_example: float
    tokens_out_per_example: float
    cost_per_1000: float | None  # in the prices' currency, per 1000 examples
    answers: tuple[tuple[str, int], ...]  # answer_key over parsed answers, most common first
    dominant: tuple[str, float] | None  # (answer, share) when it passes COLLAPSE_SHARE

    @property
    def collapsed(self) -> bool:
        return self.dominant is not None

    @property
    def warning(self) -> str | None:
        """A sentence for a collapsed candidate, None otherwise."""
        if self.dominant is None:
            return None
        value, share = self.dominant
        count = dict(self.answers)[value]
        total = sum(c for _, c in self.answers)
        of = f"{total} rows" if total == self.n else f"{total} parsed answers"
        return (
            f"answers {value!r} for {count} of {of} ({round(100 * share)} %): "
            "the model may have collapsed to one label"
        )

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self, collapsed=self.collapsed, warning=self.warning)


def summarize(info: CandidateInfo, results: Sequence[ResultRow]) -> CandidateSummary:
    """Pass rate, score, latency, tokens, cost and answer spread of one candidate."""
    n = len(results)
    passed = sum(r.passed for r in results)
    score_mean, score_low, score_high = mean_interval([r.score for r in results])
    latencies = [r.latency_s for r in results]
    tokens_in = statistics.fmean([r.tokens_in for r in results]) if n else 0.0
    tokens_out = statistics.fmean([r.tokens_out for r in results]) if n else 0.0
    cost = None
    if n and info.input_cost_per_token is not None and info.output_cost_per_token is not None:
        per_example = tokens_in * info.input_cost_per_token
        cost = 1000 * (per_example + tokens_out * info.output_cost_per_token)
    counts = Counter(answer_key(r.answer) for r in results if r.parsed)
    answers = tuple(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
    total = sum(counts.values())
    dominant = None
    if total >= COLLAPSE_MIN_ANSWERS and answers[0][1] / total > COLLAPSE_SHARE:
        dominant = (answers[0][0], answers[0][1] / total)
    return CandidateSummary(
        key=info.key,
        label=info.label,
        role=info.role,
        n=n,
        passed=passed,
        pass_rate=passed / n if n else 0.0,
        pass_ci=wilson_interval(passed, n),
        score_mean=score_mean,
        score_ci=(score_low, score_high),
        parse_failures=sum(not r.parsed for r in results),
        latency_p50=percentile(latencies, 50),
        latency_p95=percentile(latencies, 95),
        tokens_in_per_example=tokens_in,
        tokens_out_per_example=tokens_out,
        cost_per_1000=cost,
        answers=answers,
        dominant=dominant,
    )


def format_p(p: float) -> str:
    """'p = 0.5', 'p = 0.031', 'p < 0.001'."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


@dataclass(frozen=True)
class PairedTest:
    """Candidate a against b on the rows both answered: exact McNemar on the discordant rows."""

    a: str  # candidate keys
    b: str
    n: int
    a_passed: int
    b_passed: int
    only_a: int  # rows a passes and b fails
    only_b: int
    points: float  # 100 * (a_passed - b_passed) / n
    p: float
    significant: bool
    words: str

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)


def paired_test(
    a_info: CandidateInfo,
    a_results: Sequence[ResultRow],
    b_info: CandidateInfo,
    b_results: Sequence[ResultRow],
) -> PairedTest:
    """Does a pass more rows than b? Rows are matched by row_index; others are left out."""
    b_by_row = {r.row_index: r.passed for r in b_results}
    pairs = [(r.passed, b_by_row[r.row_index]) for r in a_results if r.row_index in b_by_row]
    n = len(pairs)
    a_passed = sum(a for a, _ in pairs)
    b_passed = sum(b for _, b in pairs)
    only_a = sum(a and not b for a, b in pairs)
    only_b = sum(b and not a for a, b in pairs)
    points = 100 * (a_passed - b_passed) / n if n else 0.0
    p = mcnemar_exact(only_a, only_b)
    significant = p < SIGNIFICANCE
    a_name, b_name = a_info.short_name, b_info.short_name
    if not n:
        words = f"{a_name} and {b_name} have no rows in common yet"
    else:
        head = f"{a_name} {a_passed}/{n} vs {b_name} {b_passed}/{n}"
        rounded = round(points)
        unit = "point" if abs(rounded) == 1 else "points"
        difference = f"{rounded:+d} {unit}" if rounded else f"0 {unit}"
        if only_a == only_b == 0:
            words = f"{head}: the same rows pass"
        elif significant:
            better = "better" if points > 0 else "worse"
            words = f"{head}, {difference}, {format_p(p)}: significantly {better}"
        else:
            words = f"{head}, {difference}, {format_p(p)}: not yet significant"
    return PairedTest(
        a_info.key, b_info.key, n, a_passed, b_passed, only_a, only_b, points, p, significant, words
    )


def ratio_words(a: CandidateSummary, b: CandidateSummary) -> list[str]:
    """How much faster (p50 latency) and cheaper (cost per 1000) a is than b; [] when unknown."""
    b_name = f"the {b.role}" if b.role != "model" else b.label
    words = []
    pairs = (
        (a.latency_p50, b.latency_p50, "faster", "slower", "about as fast as"),
        (a.cost_per_1000, b.cost_per_1000, "cheaper", "more expensive", "about the same cost as"),
    )
    for mine, theirs, less, more, same in pairs:
        if mine is None or theirs is None or mine <= 0 or theirs <= 0:
            continue
        ratio = theirs / mine if mine < theirs else mine / theirs
        if ratio < 1.1:
            words.append(f"{same} {b_name}")
        else:
            times = f"×{ratio:.0f}" if ratio >= 10 else f"×{ratio:.1f}"
            words.append(f"{times} {less if mine < theirs else more} than {b_name}")
    return words


@dataclass(frozen=True)
class ConfusionMatrix:
    """Gold label (rows) by predicted answer (columns: the labels, then OTHER)."""

    labels: tuple[str, ...]
    rows: tuple[tuple[int, ...], ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.labels, OTHER)

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self, columns=self.columns)


def confusion_matrix(results: Sequence[ResultRow], max_labels: int = 12) -> ConfusionMatrix | None:
    """Gold x predicted counts (by answer_key) when the task looks like classification.

    That is: at most ``max_labels`` distinct gold values, and fewer than the rows (some gold value
    repeats; a set of all-different answers is not classification). Predictions outside the gold
    labels, and unparsed answers, count in the OTHER column. None otherwise.
    """
    gold_keys = [answer_key(r.gold) for r in results]
    labels = tuple(sorted(set(gold_keys)))
    if not labels or len(labels) > max_labels or len(labels) >= len(results):
        return None
    column = {label: i for i, label in enumerate(labels)}
    counts = [[0] * (len(labels) + 1) for _ in labels]
    for gold, r in zip(gold_keys, results, strict=True):
        predicted = column.get(answer_key(r.answer), len(labels)) if r.parsed else len(labels)
        counts[column[gold]][predicted] += 1
    return ConfusionMatrix(labels=labels, rows=tuple(tuple(row) for row in counts))


def disagreement_rows(
    results_by_key: Mapping[str, Sequence[ResultRow]], a: str, b: str, kind: str
) -> list[int]:
    """Row indices by how candidates a and b did, sorted; kinds are DISAGREEMENT_KINDS.

    "all" is every row either answered; the others need both: "disagree" (one passed),
    "a_wrong_b_right", "a_right_b_wrong", "both_wrong".
    """
    a_passed = {r.row_index: r.passed for r in results_by_key.get(a, ())}
    b_passed = {r.row_index: r.passed for r in results_by_key.get(b, ())}
    if kind == "all":
        return sorted(a_passed.keys() | b_passed.keys())
    if kind not in _OUTCOMES:
        raise ValueError(f"unknown kind {kind!r}; known: {', '.join(DISAGREEMENT_KINDS)}")
    common = sorted(a_passed.keys() & b_passed.keys())
    return [row for row in common if (a_passed[row], b_passed[row]) in _OUTCOMES[kind]]


def row_order(results_by_key: Mapping[str, Sequence[ResultRow]]) -> list[int]:
    """Every row index: rows the candidates disagree on (some passed, some not) first."""
    outcomes: dict[int, set[bool]] = {}
    for results in results_by_key.values():
        for r in results:
            outcomes.setdefault(r.row_index, set()).add(r.passed)
    rows = sorted(outcomes)
    return [row for row in rows if len(outcomes[row]) > 1] + [
        row for row in rows if len(outcomes[row]) == 1
    ]


@dataclass(frozen=True)
class Comparison:
    """Every candidate's summary, and each one against the reference (the first teacher)."""

    summaries: tuple[CandidateSummary, ...]  # in the candidates' order
    reference: str | None  # the reference candidate's key
    paired: dict[str, PairedTest]  # by candidate key, every candidate but the reference
    ratios: dict[str, list[str]]  # by candidate key, as paired
    confusion: dict[str, ConfusionMatrix]  # by candidate key, only for classification

    def verdict(self) -> dict[str, Any]:
        """The headline: per candidate its pass count, and the first student against the teacher."""
        student = next((s for s in self.summaries if s.role == "student"), None)
        test = self.paired.get(student.key) if student else None
        return {
            "candidates": [
                {name: getattr(s, name) for name in ("key", "label", "role", "n", "passed")}
                | {"score": round(s.score_mean, 4), "collapsed": s.collapsed}
                for s in self.summaries
            ],
            "student_vs_teacher": test.words if test else None,
        }

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self, verdict=self.verdict())

    def text_table(self) -> str:
        """The comparison as plain text for a terminal: one line per candidate, then the
        paired tests against the reference and any collapse warnings."""
        header = (
            "candidate",
            "passed",
            "pass rate (95 % CI)",
            "unparsed",
            "p50 s",
            "tok/ex",
            "$/1k",
        )
        lines = [header]
        for s in self.summaries:
            low, high = s.pass_ci
            lines.append(
                (
                    s.label,
                    f"{s.passed}/{s.n}",
                    f"{s.pass_rate:.0%} ({low:.0%}–{high:.0%})",
                    str(s.parse_failures),
                    "—" if s.latency_p50 is None else f"{s.latency_p50:.2f}",
                    f"{s.tokens_in_per_example + s.tokens_out_per_example:.0f}",
                    "—" if s.cost_per_1000 is None else f"{s.cost_per_1000:.4g}",
                )
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        text = [
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            for line in lines
        ]
        for s in self.summaries:
            if s.key in self.paired:
                extra = "; ".join(self.ratios.get(s.key, []))
                text.append(self.paired[s.key].words + (f" ({extra})" if extra else ""))
        text += [f"warning: {s.label} {s.warning}" for s in self.summaries if s.warning]
        return "\n".join(text)


def compare(
    infos: Sequence[CandidateInfo], results_by_key: Mapping[str, Sequence[ResultRow]]
) -> Comparison:
    """The whole comparison; a candidate without results counts as having none."""
    results = {info.key: results_by_key.get(info.key, ()) for info in infos}
    summaries = tuple(summarize(info, results[info.key]) for info in infos)
    by_key = {s.key: s for s in summaries}
    reference = next((info for info in infos if info.role == "teacher"), None)
    paired: dict[str, PairedTest] = {}
    ratios: dict[str, list[str]] = {}
    if reference is not None:
        for info in infos:
            if info.key == reference.key:
                continue
            paired[info.key] = paired_test(
                info, results[info.key], reference, results[reference.key]
            )
            ratios[info.key] = ratio_words(by_key[info.key], by_key[reference.key])
    matrices = {info.key: confusion_matrix(results[info.key]) for info in infos}
    confusion = {key: matrix for key, matrix in matrices.items() if matrix is not None}
    return Comparison(
        summaries=summaries,
        reference=reference.key if reference else None,
        paired=paired,
        ratios=ratios,
        confusion=confusion,
    )
