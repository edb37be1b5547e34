"""Evaluations: queue several candidates (a model and how it is prompted) on the same rows, the
rows they answer, and their progress. Answering them is the worker's part
(jobs/work/evaluations.py); reading the results (the comparison, the page's rows, exports) is
jobs/services/comparisons.py.

A fine-tune that asked for it queues one by itself when it succeeds (:func:`queue_after_finetune`):
the run's teacher as the run prompted it, the base student and the new student, on the run's
trainset's dev rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Count
from django.utils.timezone import now

from jobs.engine.demos import pick_demos
from jobs.engine.trainsets import lacks_fields
from jobs.engine.types import MetricSpec
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
from jobs.services import model_policy, programs, queue

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

Role = EvaluationCandidate.Role
Prompting = EvaluationCandidate.Prompting


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
    spec = programs.check_scored_work(
        project=project,
        trainset=trainset,
        program_version=program_version,
        metric=metric,
        others=[
            *((c.model, "model") for c in candidates),
            *(((run, "run"),) if run is not None else ()),
        ],
    )
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


# --- progress -------------------------------------------------------------------------------


def candidate_counts(evaluation: Evaluation) -> dict[int, int]:
    """Results stored so far per candidate (for progress)."""
    return dict(
        EvaluationResult.objects.filter(candidate__evaluation=evaluation)
        .values_list("candidate_id")
        .annotate(n=Count("pk"))
        .values_list("candidate_id", "n")
    )


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
