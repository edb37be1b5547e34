"""Reading an evaluation's stored results: the comparison (the verdict), the rows the comparison
page lists and how they are filtered, one row side by side, the latest verdict per model and per
fine-tune, and the CSV/JSONL exports. Queries only: creating evaluations is
jobs/services/evaluations.py, running them jobs/work/evaluations.py; the statistics are
jobs/engine/comparison.py.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.db.models import Q

from jobs.engine import comparison
from jobs.models import (
    Evaluation,
    EvaluationCandidate,
    EvaluationResult,
    FinetuneJob,
    LanguageModel,
    Status,
)
from jobs.services import trace_sets
from jobs.values import parse_int

Role = EvaluationCandidate.Role
# What each (candidate, row) result stores, as the worker records it and the exports list it.
RESULT_FIELDS = (
    "row_index",
    "inputs",
    "labels",
    "outputs",
    "reasoning",
    "raw",
    "score",
    "passed",
    "parsed",
    "error",
    "latency_s",
    "tokens_in",
    "tokens_out",
    "lm_calls",
)


def candidate_infos(candidates: Sequence[EvaluationCandidate]) -> list[comparison.CandidateInfo]:
    """The candidates as the engine's comparison knows them."""
    return [
        comparison.CandidateInfo(
            key=str(c.pk),
            label=c.label,
            role=c.role,
            input_cost_per_token=c.input_cost_per_token,
            output_cost_per_token=c.output_cost_per_token,
        )
        for c in candidates
    ]


def result_rows(evaluation: Evaluation) -> dict[str, list[comparison.ResultRow]]:
    """Every stored result as the comparison reads it, by candidate key (one query)."""
    field = evaluation.metric_spec().field
    by_key: dict[str, list[comparison.ResultRow]] = {
        str(pk): [] for pk in evaluation.candidates.values_list("pk", flat=True)
    }
    values = EvaluationResult.objects.filter(candidate__evaluation=evaluation).values(
        "candidate_id",
        "row_index",
        "score",
        "passed",
        "parsed",
        "latency_s",
        "tokens_in",
        "tokens_out",
        "outputs",
        "labels",
    )
    for value in values.iterator(chunk_size=2000):
        key = str(value["candidate_id"])
        by_key[key].append(comparison.ResultRow.from_dict(value, field))
    return by_key


def compare(evaluation: Evaluation) -> comparison.Comparison:
    return comparison_of(evaluation, candidates_of(evaluation))[0]


def latest_verdicts(models: Sequence[LanguageModel]) -> dict[int, Evaluation]:
    """For each fine-tuned model, the newest finished evaluation where it is the student."""
    ids = [m.pk for m in models]
    latest: dict[int, Evaluation] = {}
    candidates = (
        EvaluationCandidate.objects.filter(
            language_model_id__in=ids,
            role=Role.STUDENT,
            evaluation__status=Status.SUCCEEDED,
        )
        .select_related("evaluation")
        .order_by("-evaluation__finished")
    )
    for candidate in candidates:
        latest.setdefault(candidate.language_model_id, candidate.evaluation)
    return latest


# --- the comparison page --------------------------------------------------------------------

ALL_ROWS = "all"  # every row, those the candidates disagree on first (comparison.row_order)


def candidates_of(evaluation: Evaluation) -> list[EvaluationCandidate]:
    """The evaluation's candidates in order, each with its model (one query)."""
    return list(evaluation.candidates.select_related("language_model").order_by("position"))


def candidate_names(candidates: Sequence[EvaluationCandidate]) -> dict[int, str]:
    """A few words naming each candidate on the page: its role ("teacher", "fine-tuned student")
    or, for a plain model, its label; "#n" is added where two would read the same."""
    names = {
        c.pk: c.label if c.role == Role.MODEL else c.get_role_display().lower() for c in candidates
    }
    repeated = Counter(names.values())
    return {
        c.pk: f"{names[c.pk]} #{c.position + 1}" if repeated[names[c.pk]] > 1 else names[c.pk]
        for c in candidates
    }


def comparison_of(
    evaluation: Evaluation, candidates: Sequence[EvaluationCandidate]
) -> tuple[comparison.Comparison, dict[str, list[comparison.ResultRow]]]:
    """The comparison of candidates already loaded, and the stored results it read (two
    queries, however many results)."""
    results = result_rows(evaluation)
    return comparison.compare(candidate_infos(candidates), results), results


@dataclass(frozen=True)
class RowFilter:
    """Which rows the comparison lists: every row with the disagreements first ("all"), or the
    rows by how candidate ``a`` did against candidate ``b`` (comparison.DISAGREEMENT_KINDS).
    Parsed leniently: an unknown candidate or kind falls back to the default."""

    a: int | None = None  # candidate primary keys
    b: int | None = None
    kind: str = ALL_ROWS

    @classmethod
    def default(cls, candidates: Sequence[EvaluationCandidate]) -> RowFilter:
        """The fine-tuned student (else the first other candidate) against the teacher; without
        a teacher, the first two."""
        teacher = next((c for c in candidates if c.role == Role.TEACHER), None)
        others = [c for c in candidates if c is not teacher]
        if teacher is not None and others:
            student = next((c for c in others if c.role == Role.STUDENT), others[0])
            return cls(student.pk, teacher.pk)
        if len(candidates) >= 2:
            return cls(candidates[0].pk, candidates[1].pk)
        return cls()

    @classmethod
    def from_query(
        cls, data: Mapping[str, Any], candidates: Sequence[EvaluationCandidate]
    ) -> RowFilter:
        """From ``pair`` ("<a>-<b>", candidate primary keys) and ``kind``."""
        default = cls.default(candidates)
        known = {c.pk for c in candidates}
        a_text, _, b_text = str(data.get("pair", "")).partition("-")
        a, b = parse_int(a_text), parse_int(b_text)
        if a not in known or b not in known or a == b:
            a, b = default.a, default.b
        kind = str(data.get("kind", ALL_ROWS))
        return cls(a, b, kind if kind in comparison.DISAGREEMENT_KINDS else ALL_ROWS)

    @property
    def pair(self) -> str:
        return f"{self.a}-{self.b}" if self.a is not None and self.b is not None else ""

    def querystring(self) -> str:
        return urlencode({"pair": self.pair, "kind": self.kind} if self.pair else {})

    def kind_choices(self, names: Mapping[int, str]) -> list[tuple[str, str]]:
        """The kinds, in words naming the pair's candidates."""
        if self.a is None or self.b is None:
            return [(ALL_ROWS, "every row")]
        a, b = names[self.a], names[self.b]
        return [
            (ALL_ROWS, "every row, disagreements first"),
            ("disagree", f"{a} and {b} disagree"),
            ("a_wrong_b_right", f"{a} wrong, {b} right"),
            ("a_right_b_wrong", f"{a} right, {b} wrong"),
            ("both_wrong", "both wrong"),
        ]

    def rows(self, results_by_key: Mapping[str, Sequence[comparison.ResultRow]]) -> list[int]:
        if self.kind == ALL_ROWS or self.a is None or self.b is None:
            return comparison.row_order(results_by_key)
        return comparison.disagreement_rows(results_by_key, str(self.a), str(self.b), self.kind)


def pair_choices(
    candidates: Sequence[EvaluationCandidate], names: Mapping[int, str]
) -> list[tuple[str, str]]:
    """Every pair of candidates the row filter offers, as ("<a>-<b>", "a vs b"): the teacher
    second, the others in the candidates' order."""
    choices = []
    for i, first in enumerate(candidates):
        for second in candidates[i + 1 :]:
            a, b = (second, first) if first.role == Role.TEACHER else (first, second)
            choices.append((f"{a.pk}-{b.pk}", f"{names[a.pk]} vs {names[b.pk]}"))
    return choices


@dataclass(frozen=True)
class ComparedRow:
    """One row as every candidate answered it (None: not answered yet), in candidate order."""

    index: int
    inputs: dict[str, Any]
    labels: dict[str, Any]
    results: list[EvaluationResult | None]

    @property
    def disagree(self) -> bool:
        return len({r.passed for r in self.results if r is not None}) > 1


def compared_rows(
    evaluation: Evaluation, candidates: Sequence[EvaluationCandidate], rows: Sequence[int]
) -> list[ComparedRow]:
    """The given rows, in that order, with each candidate's full result (one query)."""
    found: dict[int, dict[int, EvaluationResult]] = {}
    results = EvaluationResult.objects.filter(
        candidate__evaluation=evaluation, row_index__in=list(rows)
    ).only("candidate_id", *RESULT_FIELDS)
    for result in results:
        found.setdefault(result.row_index, {})[result.candidate_id] = result
    compared = []
    for index in rows:
        by_candidate = found.get(index, {})
        first = next(iter(by_candidate.values()), None)
        compared.append(
            ComparedRow(
                index=index,
                inputs=first.inputs if first else {},
                labels=first.labels if first else {},
                results=[by_candidate.get(c.pk) for c in candidates],
            )
        )
    return compared


@dataclass(frozen=True)
class JobEvaluations:
    """What a fine-tune's page says about its output model's evaluations."""

    latest: Evaluation | None  # the newest succeeded one where it is the student: the verdict
    newer: Evaluation | None  # a newer one that has not succeeded (queued, running, failed...)


def job_evaluations(job: FinetuneJob) -> JobEvaluations:
    """The evaluations of a fine-tune's output model as the student, or queued by the job (one
    query)."""
    evaluations = list(
        Evaluation.objects.filter(
            Q(finetune_job=job)
            | Q(candidates__language_model__source_job=job, candidates__role=Role.STUDENT)
        )
        .distinct()
        .order_by("-created")[:20]
    )
    succeeded = [e for e in evaluations if e.status == Status.SUCCEEDED]
    latest = max(succeeded, key=lambda e: e.finished or e.created) if succeeded else None
    newer = next(
        (
            e
            for e in evaluations
            if e.status != Status.SUCCEEDED and (latest is None or e.created > latest.created)
        ),
        None,
    )
    return JobEvaluations(latest=latest, newer=newer)


def row_results(
    evaluation: Evaluation, candidates: Sequence[EvaluationCandidate], row_index: int
) -> ComparedRow | None:
    """One row with every candidate's full result; None when no candidate answered it."""
    row = compared_rows(evaluation, candidates, [row_index])[0]
    return row if any(r is not None for r in row.results) else None


# --- exports --------------------------------------------------------------------------------

EXPORT_COLUMNS = ("candidate", "role", "model", *RESULT_FIELDS)


def export_records(evaluation: Evaluation) -> Iterator[dict[str, Any]]:
    """Every result, one dict each, candidate by candidate."""
    results = (
        EvaluationResult.objects.filter(candidate__evaluation=evaluation)
        .select_related("candidate__language_model")
        .order_by("candidate__position", "row_index")
    )
    for result in results.iterator(chunk_size=1000):
        candidate = result.candidate
        yield {
            "candidate": candidate.position,
            "role": candidate.role,
            "model": candidate.language_model.name,
            **{field: getattr(result, field) for field in RESULT_FIELDS},
        }


def export_jsonl(evaluation: Evaluation) -> Iterator[str]:
    for record in export_records(evaluation):
        yield json.dumps(record, ensure_ascii=False) + "\n"


def export_csv(evaluation: Evaluation) -> Iterator[str]:
    """CSV with JSON in the dict columns, formula-safe (trace_sets.csv_cell)."""
    writer = csv.writer(trace_sets.EchoWriter())
    yield writer.writerow(EXPORT_COLUMNS)
    for record in export_records(evaluation):
        yield writer.writerow([trace_sets.csv_cell(record[c]) for c in EXPORT_COLUMNS])
