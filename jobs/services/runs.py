"""Bootstrap runs: queue a teacher run over a trainset's train split, estimate its LM calls, and the
rules its worker follows (which rows the teacher sees, how the demo search is recorded, the run's
counters). The worker's part is jobs/work/runs.py."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils.timezone import now

from jobs.engine.demos import DemoSearch
from jobs.engine.programs import ProgramSpecError
from jobs.engine.trainsets import lacks_fields
from jobs.engine.types import BootstrapConfig, MetricSpec
from jobs.models import (
    BootstrapRun,
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


def create_bootstrap_run(
    *,
    project: Project,
    trainset: Trainset,
    program_version: ProgramVersion,
    teacher: LanguageModel,
    metric: MetricSpec,
    config: BootstrapConfig,
    user: User,
    skip_missing: bool = False,
) -> BootstrapRun:
    """Queue a bootstrap run. Train rows that lack a program input or the metric's field (or hold
    null there) refuse it, unless ``skip_missing``: then they are counted as skipped, never sent."""
    spec = programs.check_scored_work(
        project=project,
        trainset=trainset,
        program_version=program_version,
        metric=metric,
        others=[(teacher, "teacher")],
    )
    model_policy.check_model(teacher)
    if config.limit is not None and config.limit < 1:
        raise ValueError("The limit must be at least 1.")
    missing = trainset.rows_missing([*spec.input_fields, metric.field])
    if missing.count and not skip_missing:
        raise ValueError(f"{missing}. Fix the file, or skip the rows missing a field.")
    n_train = trainset.rows.filter(split=TrainsetRow.Split.TRAIN).count() - missing.count
    if n_train < 1:
        what = "rows with every field the run needs" if missing.count else "rows"
        raise ValueError(f"Trainset {trainset.name!r} has no {what} in its train split.")
    if config.temperature is None:  # recorded: a later edit of the model does not rewrite the run
        config = dataclasses.replace(config, temperature=teacher.temperature)
    with transaction.atomic():
        Trainset.objects.select_for_update().filter(pk=trainset.pk).first()  # not while re-split
        run = BootstrapRun.objects.create(
            project=project,
            trainset=trainset,
            program_version=program_version,
            teacher=teacher,
            metric=metric.to_dict(),
            config=config.to_dict(),
            total=min(n_train, config.limit) if config.limit else n_train,
            skipped=missing.count,
            created_by=user,
        )
        queue.enqueue(run)
    return run


def estimate(
    *,
    trainset: Trainset | None,
    program_version: ProgramVersion | None,
    limit: int | None,
    reason_demos: bool,
    num_demos: int | None,
    metric_field: str,
    demo_strategy: str = "random",
    retries: int = 0,
) -> dict[str, Any]:
    """LM calls (examples × modules, plus the demos answered first, plus the demo search's
    calls) for a run form as filled in so far (BootstrapRunForm.estimate_options), the most
    retries could add, and why the program would not fit the trainset."""
    result: dict[str, Any] = {"calls": None, "problems": [], "outputs": []}
    if trainset is None or program_version is None:
        return result
    try:
        spec = program_version.to_spec()
    except ProgramSpecError as e:
        result["problems"] = [f"the program's spec is invalid: {e}"]
        return result
    result["outputs"] = list(spec.output_fields)
    n_train = trainset.rows.filter(split=TrainsetRow.Split.TRAIN).count()
    examples = min(n_train, limit) if limit and limit > 0 else n_train
    modules = len(spec.modules)
    demos = min(n_train, max(0, num_demos or 0))
    demo_calls = demos * modules if reason_demos else 0
    search_calls = 0
    if demo_strategy == "stratified_search" and demos:
        config = BootstrapConfig()  # the search's own sizes: (candidate sets + 1 order) x rows
        rows = min(config.demo_search_rows, max(0, n_train - demos))
        search_calls = (config.demo_candidates + 1) * rows * modules
    problems = programs.fit_problems(
        spec,
        trainset.field_names,
        metric_field or None,
        program=programs.version_label(program_version),
    )
    result.update(
        examples=examples,
        modules=modules,
        demo_calls=demo_calls,
        search_calls=search_calls,
        retry_calls=examples * modules * max(0, retries),
        calls=examples * modules + demo_calls + search_calls,
        problems=problems,
    )
    return result


def form_values(run: BootstrapRun) -> dict[str, Any]:
    """A run's settings as the run form's initial values (to change them and queue again)."""
    metric, config = run.metric_spec(), run.bootstrap_config()
    values = {
        "trainset": run.trainset_id,
        "program_version": run.program_version_id,
        "teacher": run.teacher_id,
        "metric": metric.name,
        "metric_field": metric.field,
        "threshold": metric.threshold,
        "tolerance": metric.options.get("tolerance"),
        "relative": metric.options.get("relative"),
        "pattern": metric.options.get("pattern"),
        "skip_missing": bool(run.skipped),
    }
    names: tuple[str, ...] = (
        "num_threads",
        "limit",
        "num_demos",
        "demo_seed",
        "temperature",
        "demo_strategy",
    )
    names += ("reason_demos", "retries", "retry_temperature", "smoke_size")
    return values | {name: getattr(config, name) for name in names}


def bootstrap_inputs(
    run: BootstrapRun,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], set[int]]:
    """(examples, demos, skip) for the engine: the train split, its rows as demos, finished traces.

    Rows that lack a program input or the metric's field (or hold null there) are left out of
    both: the teacher never sees them (the run counted them as ``skipped``)."""
    needed = [*run.program_version.to_spec().input_fields, run.metric_spec().field]
    rows = [
        (index, data)
        for index, data in run.trainset.rows.filter(split=TrainsetRow.Split.TRAIN)
        .order_by("index")
        .values_list("index", "data")
        if not lacks_fields(data, needed)
    ]
    examples = [{"index": index, "data": data} for index, data in rows]
    demos = [data for _index, data in rows]
    skip = set(run.traces.values_list("example_index", flat=True))
    return examples, demos, skip


def demo_search_record(
    search: DemoSearch,
    row_indices: list[int],
    demos: list[dict[str, Any]],
    input_fields: tuple[str, ...],
) -> dict[str, Any]:
    """The engine's demo search for the run page: demo positions become train row indices, and
    the chosen demos carry their inputs and label."""
    record = search.to_dict()
    for candidate in record["candidates"]:
        candidate["demos"] = [row_indices[p] for p in candidate["demos"]]
    record["sample"] = [row_indices[p] for p in record["sample"]]
    record["chosen_demos"] = [
        {
            "index": row_indices[p],
            "inputs": {f: demos[p].get(f) for f in input_fields},
            "label": demos[p].get(search.label_field),
        }
        for p in search.chosen_demos
    ]
    return record


def chosen_demo_positions(record: dict[str, Any], row_indices: list[int]) -> list[int] | None:
    """A resumed run keeps the demos its search chose: their positions among today's train rows,
    or None (search again) when there was no search or a chosen row is gone."""
    chosen = [demo["index"] for demo in (record or {}).get("chosen_demos", [])]
    position = {index: p for p, index in enumerate(row_indices)}
    if not chosen or any(index not in position for index in chosen):
        return None
    return [position[index] for index in chosen]


def refresh_run_counts(run: BootstrapRun) -> None:
    """Counters from the stored traces, so they stay right across resumes."""
    agg = run.traces.aggregate(
        done=Count("pk"),
        errored=Count("pk", filter=~Q(error="")),
        passed=Count("pk", filter=Q(error="", passed=True)),
        lm_calls=Sum("lm_calls"),
        tokens=Sum("tokens"),
    )
    BootstrapRun.objects.filter(pk=run.pk).update(
        done=agg["done"],
        errored=agg["errored"],
        passed=agg["passed"],
        failed=agg["done"] - agg["errored"] - agg["passed"],
        lm_calls=agg["lm_calls"] or 0,
        tokens=agg["tokens"] or 0,
        updated=now(),
    )


def continue_run(*, row: BootstrapRun, user: User | None = None) -> BootstrapRun:
    """A person read the smoke test's figures and goes on: the run bootstraps the rest."""
    by = user.get_username() if user is not None else ""
    BootstrapRun.objects.filter(pk=row.pk, status=Status.CHECKED).update(
        smoke={**row.smoke, "continued_by": by}
    )
    queue.continue_checked(row=row, user=user)
    return row
