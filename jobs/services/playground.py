"""The playground: a program version answers one input with up to four models, side by side, on
a worker (never in the web process); every try is stored with who ran it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.db import transaction

from jobs.models import (
    LanguageModel,
    PlaygroundTry,
    ProgramVersion,
    Project,
    Status,
    TrainsetRow,
)
from jobs.models.playground import MAX_MODELS
from jobs.services import errors, model_policy, queue

if TYPE_CHECKING:
    from django.contrib.auth.models import User

RECENT = 10
RESULT_KEYS = ("outputs", "reasoning", "raw", "error", "latency_s", "tokens_in", "tokens_out")


def create_try(
    *,
    project: Project,
    program_version: ProgramVersion,
    models: Sequence[LanguageModel],
    user: User,
    inputs: dict[str, Any] | None = None,
    row: TrainsetRow | None = None,
) -> PlaygroundTry:
    """Queue a try: typed ``inputs`` (every program input) or a trainset ``row`` (its inputs, and
    its gold values shown beside the answers)."""
    if program_version.program.project_id != project.pk:
        raise ValueError("The program belongs to another project.")
    if not 1 <= len(models) <= MAX_MODELS:
        raise ValueError(f"Pick one to {MAX_MODELS} models.")
    for model in models:
        if model.project_id != project.pk:
            raise ValueError("A model belongs to another project.")
        model_policy.check_model(model)
    spec = program_version.to_spec()
    labels: dict[str, Any] = {}
    if row is not None:
        if row.trainset.project_id != project.pk:
            raise ValueError("The row belongs to another project.")
        inputs = {name: row.data.get(name) for name in spec.input_fields}
        labels = {k: v for k, v in row.data.items() if k not in spec.input_fields}
    inputs = inputs or {}
    missing = [name for name in spec.input_fields if inputs.get(name) in (None, "")]
    if missing:
        raise ValueError("Fill in every input: " + ", ".join(missing) + ".")
    with transaction.atomic():
        attempt = PlaygroundTry.objects.create(
            project=project,
            program_version=program_version,
            chosen=[{"pk": m.pk, "name": m.name} for m in models],
            inputs={name: inputs[name] for name in spec.input_fields},
            row=row,
            labels=labels,
            created_by=user,
        )
        queue.enqueue(attempt)
    return attempt


def recent_tries(project: Project) -> list[PlaygroundTry]:
    tries = PlaygroundTry.objects.filter(project=project)
    return list(tries.select_related("created_by", "program_version__program")[:RECENT])


def run_try(attempt: PlaygroundTry) -> str:
    """The worker's part: each model answers in turn; each answer is stored as it comes."""
    if not attempt.mark_running():
        return "skipped"
    from jobs.engine.evaluate import answer
    from jobs.engine.types import MetricSpec

    spec = attempt.program_version.to_spec()
    labelled = [name for name in reversed(spec.output_fields) if name in attempt.labels]
    metric = MetricSpec("normalized_match", labelled[0]) if labelled else None
    results: list[dict[str, Any]] = []
    for chosen in attempt.chosen:
        if attempt.stop_requested():
            break
        started = time.monotonic()
        model = LanguageModel.objects.filter(pk=chosen["pk"], project=attempt.project).first()
        try:
            if model is None:
                raise ValueError("the model was deleted")
            model_policy.check_model(model)
            result = answer(
                program=spec,
                model=model.to_spec(),
                inputs=attempt.inputs,
                labels=attempt.labels,
                metric=metric,
            )
            record = {key: result[key] for key in RESULT_KEYS} | {"passed": result["passed"]}
            if record["error"]:
                record["error"] = errors.public_text(record["error"])
        except Exception as exc:
            record = {
                "error": errors.describe(exc),
                "latency_s": round(time.monotonic() - started, 3),
            }
        results.append({"model": chosen["pk"], "name": chosen["name"], **record})
        PlaygroundTry.objects.filter(pk=attempt.pk).update(results=results)
    status = Status.CANCELLED if attempt.stop_requested() else Status.SUCCEEDED
    attempt.mark_finished(status, results=results)
    return status
