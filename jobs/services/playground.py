"""The playground: a program version answers one input with up to four models, side by side, on
a worker (never in the web process: jobs/work/playground.py); every try is stored with who ran
it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.db import transaction

from jobs.models import (
    LanguageModel,
    PlaygroundTry,
    ProgramVersion,
    Project,
    TrainsetRow,
)
from jobs.models.playground import MAX_MODELS
from jobs.services import model_policy, queue

if TYPE_CHECKING:
    from django.contrib.auth.models import User

RECENT = 10


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
