"""Fine-tune jobs: queue LoRA training of a student on a frozen trace set, and the rows a job trains
on. The worker's part (training, its progress, the output model) is jobs/work/finetunes.py."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from django.db import transaction

from jobs.engine.types import FinetuneConfig
from jobs.models import (
    BootstrapRun,
    FinetuneJob,
    LanguageModel,
    Project,
    TraceSet,
)
from jobs.services import model_policy, queue, trace_sets

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def check_student(student: LanguageModel, project: Project) -> None:
    """ValueError unless ``student`` can be fine-tuned in ``project``."""
    if student.project_id != project.pk:
        raise ValueError("The student belongs to another project.")
    model_policy.check_model(student)
    if not student.is_local:
        raise ValueError(
            f"Student {student.name!r} is a {student.kind} model; only local models fine-tune here."
        )
    if not student.fine_tunable:
        raise ValueError(f"Student {student.name!r} is not marked fine-tunable.")


def create_finetune_job(
    *,
    run: BootstrapRun,
    student: LanguageModel,
    config: FinetuneConfig,
    selection: str = FinetuneJob.Selection.APPROVED,
    multitask: bool = True,
    exclude_demos: bool = True,
    user: User,
    trace_set: TraceSet | None = None,
    max_label_share: float | None = None,
    evaluate_when_done: bool = False,
) -> FinetuneJob:
    """Queue a fine-tune on ``trace_set``, or on the ``selection`` frozen now as a new trace set
    (with ``max_label_share``, no label over that share of its rows; seeded by the config's seed).
    With ``evaluate_when_done``, its success queues an evaluation on the run's dev rows."""
    from jobs.engine.finetune import validate_config

    check_student(student, run.project)
    if selection not in FinetuneJob.Selection.values:
        raise ValueError(f"Unknown trace selection {selection!r}.")
    if trace_set is not None and trace_set.run_id != run.pk:
        raise ValueError("The trace set belongs to another run.")
    if trace_set is not None and max_label_share is not None:
        raise ValueError("A label cap applies when a selection is frozen, not to a frozen set.")
    if trace_set is None and not run.traces.for_selection(selection).exists():
        label = FinetuneJob.Selection(selection).label
        raise ValueError(f"No traces to train on: the run has no {label} traces.")
    config = dataclasses.replace(config, base_model=student.model_name)
    validate_config(config)
    with transaction.atomic():
        if trace_set is None:  # every job trains on a frozen set: its model id traces back to rows
            trace_set = trace_sets.freeze_trace_set(
                run=run,
                user=user,
                selection=selection,
                max_label_share=max_label_share,
                seed=config.seed,
            )
        selection = trace_set.rule.get("selection", selection)
        job = FinetuneJob.objects.create(
            trace_set=trace_set,
            project=run.project,
            run=run,
            student=student,
            config=trace_sets.job_config(trace_set, config),  # the knobs and their plan
            selection=selection,
            multitask=multitask,
            exclude_demos=exclude_demos,
            evaluate_when_done=evaluate_when_done,
            created_by=user,
        )
        queue.enqueue(job)
    return job


def training_rows(job: FinetuneJob) -> list[dict[str, Any]]:
    """Chat rows from the job's frozen trace set (decisions and edits as they were frozen),
    exactly as DSPy formats them."""
    if job.trace_set is None:
        raise ValueError("The job has no frozen trace set to train on.")
    return trace_sets.training_rows(
        job.trace_set, multitask=job.multitask, exclude_demos=job.exclude_demos
    )
