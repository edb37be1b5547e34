"""Evaluations: queue several candidates (a model and how it is prompted) on the same rows, store
every answer as it completes, and compare them (jobs/engine/comparison.py).

A fine-tune that asked for it queues one by itself when it succeeds (:func:`queue_after_finetune`):
the run's teacher as the run prompted it, the base student and the new student, on the run's
trainset's dev rows.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.utils.timezone import now

from jobs.engine import comparison
from jobs.engine.demos import pick_demos
from jobs.engine.metrics import validate_metric_spec
from jobs.engine.trainsets import lacks_fields
from jobs.engine.types import MetricSpec
from jobs.forms.values import parse_int
from jobs.models import (
    BootstrapRun,
    Evaluation,
    EvaluationCandidate,
    EvaluationResult,
    FinetuneJob,
    LanguageModel,
    ProgramVersion,
    Project,
    Status,
    Trainset,
    TrainsetRow,
)
from jobs.services import errors, model_policy, programs, queue, trace_sets

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

Role = EvaluationCandidate.Role
Prompting = EvaluationCandidate.Prompting
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


@dataclass(frozen=True)
class CandidateChoice:
    """A candidate as asked for: which model, in which role, prompted how."""

    model: LanguageModel
    role: str = Role.MODEL
    prompting: str = Prompting.ZERO_SHOT


# --- creating -------------------------------------------------------------------------------


def create_evaluation(
    *,
    project: Project,
    program_version: ProgramVersion,
    trainset: Trainset,
    metric: MetricSpec,
    candidates: Sequence[CandidateChoice],
    user: User,
    split: str = Evaluation.Split.DEV,
    run: BootstrapRun | None = None,
    finetune_job: FinetuneJob | None = None,
    limit: int | None = None,
    num_threads: int = 8,
) -> Evaluation:
    """Queue an evaluation. Rows lacking a program input or the metric's field are left out
    (they cannot be scored); "with the run's demos" needs ``run``."""
    for obj, what in (
        (trainset, "trainset"),
        (program_version.program, "program"),
        *((c.model, "model") for c in candidates),
        *(((run, "run"),) if run is not None else ()),
    ):
        if obj.project_id != project.pk:
            raise ValueError(f"The {what} belongs to another project.")
    if not candidates:
        raise ValueError("Pick at least one model to evaluate.")
    if len(candidates) > 8:
        raise ValueError("At most 8 candidates per evaluation.")
    if split not in Evaluation.Split.values:
        raise ValueError(f"Unknown split {split!r}; expected one of {Evaluation.Split.values}.")
    if limit is not None and limit < 1:
        raise ValueError("The row limit must be at least 1.")
    if not 1 <= num_threads <= 64:
        raise ValueError("Threads must be between 1 and 64.")
    for choice in candidates:
        model_policy.check_model(choice.model)
        if choice.prompting == Prompting.RUN_DEMOS and run is None:
            raise ValueError("“With the run's demos” needs the run whose teacher it copies.")
    if trainset.status != Trainset.Status.READY:
        raise ValueError(f"Trainset {trainset.name!r} is not ready ({trainset.status}).")
    spec = program_version.to_spec()
    validate_metric_spec(metric, spec.output_fields)
    problems = programs.fit_problems(spec, trainset.field_names, metric.field)
    if problems:
        raise ValueError("The program does not fit the rows: " + "; ".join(problems))
    needed = [*spec.input_fields, metric.field]
    n_rows = len(_row_indices(trainset, split, needed, limit))
    if n_rows == 0:
        raise ValueError(
            f"Trainset {trainset.name!r} has no {split} rows with every field the evaluation needs."
        )
    demos = run_demos(run) if run is not None else []
    with transaction.atomic():
        evaluation = Evaluation.objects.create(
            project=project,
            program_version=program_version,
            trainset=trainset,
            split=split,
            metric=metric.to_dict(),
            run=run,
            finetune_job=finetune_job,
            limit=limit,
            num_threads=num_threads,
            rows=n_rows,
            total=n_rows * len(candidates),
            created_by=user,
        )
        EvaluationCandidate.objects.bulk_create(
            [
                EvaluationCandidate(
                    evaluation=evaluation,
                    position=position,
                    role=choice.role,
                    language_model=choice.model,
                    prompting=choice.prompting,
                    demos=demos if choice.prompting == Prompting.RUN_DEMOS else [],
                    temperature=(
                        run.teacher_temperature
                        if run is not None and choice.prompting == Prompting.RUN_DEMOS
                        else 0.0
                    ),
                )
                for position, choice in enumerate(candidates)
            ]
        )
        queue.enqueue(evaluation)
    return evaluation


def run_demos(run: BootstrapRun) -> list[dict[str, Any]]:
    """The labeled demos the run's teacher was shown: those its demo search chose, else the
    seeded random pick (the same rows as the run picked while the train split is unchanged)."""
    chosen = [demo["index"] for demo in (run.demo_search or {}).get("chosen_demos", [])]
    config = run.bootstrap_config()
    train = run.trainset.rows.filter(split=TrainsetRow.Split.TRAIN).order_by("index")
    if chosen:
        data = dict(train.filter(index__in=chosen).values_list("index", "data"))
        return [data[i] for i in chosen if i in data]
    needed = [*run.program_version.to_spec().input_fields, run.metric_spec().field]
    rows = [data for data in train.values_list("data", flat=True) if not lacks_fields(data, needed)]
    return pick_demos(rows, config.num_demos, config.demo_seed)


def default_candidates(job: FinetuneJob, output: LanguageModel) -> list[CandidateChoice]:
    """Teacher as the run prompted it, the base student and the fine-tuned student, zero-shot."""
    return [
        CandidateChoice(job.run.teacher, Role.TEACHER, Prompting.RUN_DEMOS),
        CandidateChoice(job.student, Role.BASE, Prompting.ZERO_SHOT),
        CandidateChoice(output, Role.STUDENT, Prompting.ZERO_SHOT),
    ]


def queue_after_finetune(job: FinetuneJob, output: LanguageModel) -> Evaluation | None:
    """A succeeded fine-tune that asked for it: evaluate teacher, base and new student on the
    run's dev rows. None (and a line in the job's log) when there is nothing to evaluate on."""
    run = job.run
    try:
        return create_evaluation(
            project=job.project,
            program_version=run.program_version,
            trainset=run.trainset,
            metric=run.metric_spec(),
            candidates=default_candidates(job, output),
            user=job.created_by,
            run=run,
            finetune_job=job,
        )
    except ValueError as exc:
        logger.info("no evaluation after fine-tune %s: %s", job.pk, exc)
        return None


def _row_indices(trainset: Trainset, split: str, needed: list[str], limit: int | None) -> list[int]:
    rows = trainset.rows.order_by("index")
    if split != Evaluation.Split.ALL:
        rows = rows.filter(split=split)
    indices = [i for i, data in rows.values_list("index", "data") if not lacks_fields(data, needed)]
    return indices[:limit] if limit else indices


def evaluation_rows(evaluation: Evaluation) -> list[dict[str, Any]]:
    """The rows every candidate answers, as the engine takes them: ``{"index", "data"}``."""
    needed = [*evaluation.program_version.to_spec().input_fields, evaluation.metric_spec().field]
    indices = _row_indices(evaluation.trainset, evaluation.split, needed, evaluation.limit)
    data = dict(evaluation.trainset.rows.filter(index__in=indices).values_list("index", "data"))
    return [{"index": i, "data": data[i]} for i in indices if i in data]


# --- the worker's part ----------------------------------------------------------------------


class ResultRecorder:
    """Stores each result as it completes; refreshes the evaluation's counter every few seconds."""

    def __init__(self, evaluation: Evaluation, candidate: EvaluationCandidate) -> None:
        self.evaluation = evaluation
        self.candidate = candidate
        self.every_s = settings.BFT_PROGRESS_EVERY_S
        self._last = 0.0

    def __call__(self, result: dict[str, Any]) -> None:
        values = {k: result[k] for k in RESULT_FIELDS}
        if values["error"]:
            values["error"] = errors.public_text(values["error"])
        EvaluationResult.objects.bulk_create(
            [EvaluationResult(candidate=self.candidate, **values)], ignore_conflicts=True
        )
        if time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            refresh_done(self.evaluation)


def refresh_done(evaluation: Evaluation) -> None:
    done = EvaluationResult.objects.filter(candidate__evaluation=evaluation).count()
    Evaluation.objects.filter(pk=evaluation.pk).update(done=done, updated=now())


def run_evaluation(evaluation: Evaluation) -> str:
    """Each candidate answers every row in turn; finished rows are skipped (a retry resumes), a
    cancel stops after the rows in flight. A candidate that cannot run at all (its model is gone,
    a key is missing) records why and the others still run."""
    if not evaluation.mark_running():
        return "skipped"
    from jobs.engine.evaluate import evaluate, price_per_token

    spec = evaluation.program_version.to_spec()
    rows = evaluation_rows(evaluation)
    metric = evaluation.metric_spec()
    try:
        for candidate in evaluation.candidates.select_related("language_model").order_by(
            "position"
        ):
            if evaluation.stop_requested():
                break
            model = candidate.language_model
            done = set(candidate.results.values_list("row_index", flat=True))
            try:
                model_policy.check_model(model)
                model_spec = model.to_spec()
                model_spec = type(model_spec)(
                    **{**model_spec.to_dict(), "temperature": candidate.temperature}
                )
                price_in, price_out = price_per_token(model_spec)
                EvaluationCandidate.objects.filter(pk=candidate.pk).update(
                    input_cost_per_token=price_in, output_cost_per_token=price_out, error=""
                )
                evaluate(
                    program=spec,
                    model=model_spec,
                    rows=rows,
                    metric=metric,
                    demos=candidate.demos,
                    threads=evaluation.num_threads,
                    skip=done,
                    on_result=ResultRecorder(evaluation, candidate),
                    should_stop=evaluation.stop_requested,
                )
            except Exception as exc:  # this candidate only: the comparison shows why
                logger.exception("evaluation %s: candidate %s failed", evaluation.pk, candidate.pk)
                EvaluationCandidate.objects.filter(pk=candidate.pk).update(
                    error=errors.describe(exc)
                )
    except Exception as exc:
        refresh_done(evaluation)
        evaluation.mark_finished(Status.FAILED, error=errors.describe(exc))
        raise
    refresh_done(evaluation)
    if evaluation.stop_requested():
        evaluation.mark_finished(Status.CANCELLED)
        return Status.CANCELLED
    failed = list(
        evaluation.candidates.exclude(error="")
        .select_related("language_model")
        .values_list("language_model__name", "error")
    )
    verdict = compare(evaluation).verdict()
    if failed and len(failed) == evaluation.candidates.count():
        message = "; ".join(f"{name}: {error}" for name, error in failed)
        evaluation.mark_finished(Status.FAILED, error=message, verdict=verdict)
        return Status.FAILED
    evaluation.mark_finished(Status.SUCCEEDED, verdict=verdict)
    return Status.SUCCEEDED


# --- reading --------------------------------------------------------------------------------


def candidate_infos(evaluation: Evaluation) -> list[comparison.CandidateInfo]:
    return [
        comparison.CandidateInfo(
            key=str(c.pk),
            label=c.label,
            role=c.role,
            input_cost_per_token=c.input_cost_per_token,
            output_cost_per_token=c.output_cost_per_token,
        )
        for c in evaluation.candidates.select_related("language_model").order_by("position")
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
    return comparison.compare(candidate_infos(evaluation), result_rows(evaluation))


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


def candidate_counts(evaluation: Evaluation) -> dict[int, int]:
    """Results stored so far per candidate (for progress)."""
    return dict(
        EvaluationResult.objects.filter(candidate__evaluation=evaluation)
        .values_list("candidate_id")
        .annotate(n=Count("pk"))
        .values_list("candidate_id", "n")
    )


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
    infos = [
        comparison.CandidateInfo(
            key=str(c.pk),
            label=c.label,
            role=c.role,
            input_cost_per_token=c.input_cost_per_token,
            output_cost_per_token=c.output_cost_per_token,
        )
        for c in candidates
    ]
    results = result_rows(evaluation)
    return comparison.compare(infos, results), results


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


def count_rows(
    *,
    trainset: Trainset,
    program_version: ProgramVersion,
    metric_field: str,
    split: str,
    limit: int | None = None,
) -> int:
    """How many rows an evaluation with these choices would score (as create_evaluation counts)."""
    needed = [*program_version.to_spec().input_fields, metric_field]
    return len(_row_indices(trainset, split, needed, limit))


@dataclass(frozen=True)
class EvaluationProgress:
    counts: dict[int, int]  # results stored so far, by candidate primary key
    rate: float | None  # results per second in this attempt (a retry skips earlier ones)
    eta_s: float | None  # while running


def progress(evaluation: Evaluation) -> EvaluationProgress:
    """Per-candidate counts; while active, the rate and ETA too (then two queries)."""
    counts = candidate_counts(evaluation)
    rate = eta = None
    if evaluation.started is not None and evaluation.is_active:
        elapsed = (now() - evaluation.started).total_seconds()
        recent = EvaluationResult.objects.filter(
            candidate__evaluation=evaluation, created__gte=evaluation.started
        ).count()
        if recent and elapsed > 0:
            rate = recent / elapsed
    if rate and evaluation.status == Status.RUNNING:
        eta = max(0, evaluation.total - sum(counts.values())) / rate
    return EvaluationProgress(counts=counts, rate=rate, eta_s=eta)


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
