"""Bootstrap runs: queue a teacher run over a trainset's train split and record its traces."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils.timezone import now

from jobs.engine.programs import ProgramSpecError
from jobs.engine.trainsets import lacks_fields
from jobs.engine.types import BootstrapConfig, BootstrapProgress, MetricSpec
from jobs.models import (
    BootstrapRun,
    LanguageModel,
    ProgramVersion,
    Project,
    Status,
    Trace,
    Trainset,
    TrainsetRow,
)
from jobs.services import errors, model_policy, programs, queue, smoke

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from jobs.engine.demos import DemoSearch


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
    project: Project,
    *,
    trainset_pk: int | None,
    version_pk: int | None,
    limit: int | None,
    reason_demos: bool,
    num_demos: int | None,
    metric_field: str,
    demo_strategy: str = "random",
    retries: int = 0,
) -> dict[str, Any]:
    """LM calls (examples × modules, plus the demos answered first, plus the demo search's
    calls) for a run form as filled in so far, the most retries could add, and why the program
    would not fit the trainset."""
    result: dict[str, Any] = {"calls": None, "problems": [], "outputs": []}
    if trainset_pk is None or version_pk is None:
        return result
    trainset = Trainset.objects.filter(
        project=project, status=Trainset.Status.READY, pk=trainset_pk
    ).first()
    version = (
        ProgramVersion.objects.filter(program__project=project, pk=version_pk)
        .select_related("program")
        .first()
    )
    if trainset is None or version is None:
        return result
    try:
        spec = version.to_spec()
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
    result.update(
        examples=examples,
        modules=modules,
        demo_calls=demo_calls,
        search_calls=search_calls,
        retry_calls=examples * modules * max(0, retries),
        calls=examples * modules + demo_calls + search_calls,
        problems=programs.fit_problems(spec, trainset.field_names, metric_field or None),
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


def record_traces(
    run: BootstrapRun, records: list[dict[str, Any]], *, split: str = "train"
) -> None:
    """Store finished examples; a duplicate example_index (a resumed run) is ignored."""
    names = {f.name for f in Trace._meta.concrete_fields} - {"id", "run", "split", "created"}
    Trace.objects.bulk_create(
        [
            Trace(run=run, split=split, **{k: v for k, v in r.items() if k in names})
            for r in records
        ],
        ignore_conflicts=True,
    )


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


class RunRecorder:
    """Stores each trace as it completes; refreshes the run's counters at most every few seconds."""

    def __init__(self, run: BootstrapRun) -> None:
        self.run = run
        self.every_s = settings.BFT_PROGRESS_EVERY_S
        self._last = 0.0

    def on_trace(self, record: dict[str, Any]) -> None:
        if record.get("error"):
            record = {**record, "error": errors.public_text(record["error"])}
        record_traces(self.run, [record])
        if time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            refresh_run_counts(self.run)


def needs_smoke_test(run: BootstrapRun, config: BootstrapConfig, todo: int) -> bool:
    """A first start whose run asked for one, with more examples to go than the sample."""
    return bool(config.smoke_size) and not run.smoke and todo > config.smoke_size


def smoke_test(
    run: BootstrapRun,
    config: BootstrapConfig,
    examples: list[dict[str, Any]],
    teach: Any,
    recorder: RunRecorder,
) -> bool:
    """Bootstrap the stratified sample (its traces are the run's: the rest skips them), store the
    figures and forecast, and pause the run "checked" when they look broken. True if paused."""
    from jobs.engine.evaluate import price_per_token

    metric = run.metric_spec()
    sample = smoke.sample_examples(examples, metric.field, config.smoke_size, config.demo_seed)
    records: list[dict[str, Any]] = []

    def keep(record: dict[str, Any]) -> None:
        records.append(record)
        recorder.on_trace(record)

    progress = teach(sample, keep)
    found = smoke.figures(
        records,
        label_field=metric.field,
        total=len(examples),
        elapsed_s=progress.elapsed_s,
        price=price_per_token(config.teacher_for_run(run.teacher.to_spec())),
    )
    BootstrapRun.objects.filter(pk=run.pk).update(smoke=found)
    run.smoke = found
    refresh_run_counts(run)
    if not found["problems"] or run.stop_requested():
        return False
    return run.mark_checked()


def continue_run(*, row: BootstrapRun, user: User | None = None) -> BootstrapRun:
    """A person read the smoke test's figures and goes on: the run bootstraps the rest."""
    by = user.get_username() if user is not None else ""
    BootstrapRun.objects.filter(pk=row.pk, status=Status.CHECKED).update(
        smoke={**row.smoke, "continued_by": by}
    )
    queue.continue_checked(row=row, user=user)
    return row


def run_bootstrap(run: BootstrapRun) -> str:
    """The worker's part: run the teacher over the train split, storing each trace as it ends.

    Finished examples are skipped (a retried run resumes); a cancel stops after the current ones.
    """
    if not run.mark_running():
        return "skipped"
    from jobs.engine.bootstrap import bootstrap

    examples, demos, skip = bootstrap_inputs(run)
    recorder = RunRecorder(run)
    spec = run.program_version.to_spec()
    row_indices = [example["index"] for example in examples]

    def store_search(search: DemoSearch) -> None:
        record = demo_search_record(search, row_indices, demos, spec.input_fields)
        BootstrapRun.objects.filter(pk=run.pk).update(demo_search=record)

    config = run.bootstrap_config()

    def teach(todo: list[dict[str, Any]], on_trace: Any) -> BootstrapProgress:
        run.refresh_from_db(fields=["demo_search"])
        return bootstrap(
            program=spec,
            teacher=run.teacher.to_spec(),
            examples=todo,
            metric=run.metric_spec(),
            config=config,
            demos=demos,
            skip=skip,
            on_trace=on_trace,
            should_stop=run.stop_requested,
            demo_positions=chosen_demo_positions(run.demo_search, row_indices),
            on_demo_search=store_search,
        )

    try:
        model_policy.check_model(run.teacher)
        chosen = examples[: config.limit] if config.limit else examples
        if needs_smoke_test(run, config, len(chosen) - len(skip)):
            if smoke_test(run, config, chosen, teach, recorder):
                return Status.CHECKED
            skip = set(run.traces.values_list("example_index", flat=True))
        teach(examples, recorder.on_trace)
    except Exception as exc:
        refresh_run_counts(run)
        run.mark_finished(Status.FAILED, error=errors.describe(exc))
        raise  # RQ keeps the traceback in its failed registry too
    refresh_run_counts(run)
    status = Status.CANCELLED if run.stop_requested() else Status.SUCCEEDED
    run.mark_finished(status)
    return status
