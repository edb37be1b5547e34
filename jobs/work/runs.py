"""A bootstrap run on a worker: the teacher over the run's train split, each trace stored as it
completes.

Finished examples are skipped, so a retried run resumes; a cancel stops after the examples in
flight. A first start with a smoke test bootstraps its stratified sample first and pauses the run
"checked" when the sample looks broken (jobs/services/smoke.py), before the rest is spent; a person
continues it (queued again) or cancels it. Which rows the teacher sees and how the demo search is
recorded are the run's rules, in jobs/services/runs.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from jobs.engine.demos import DemoSearch
from jobs.engine.types import BootstrapConfig, BootstrapProgress
from jobs.models import BootstrapRun, Status, Trace
from jobs.services import errors, model_policy, runs, smoke
from jobs.work.base import Ending, RowWork

# What the engine calls with each finished example.
TraceSink = Callable[[dict[str, Any]], None]


def record_traces(
    run: BootstrapRun, records: Sequence[dict[str, Any]], *, split: str = "train"
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


def needs_smoke_test(run: BootstrapRun, config: BootstrapConfig, todo: int) -> bool:
    """A first start whose run asked for one, with more examples to go than the sample."""
    return bool(config.smoke_size) and not run.smoke and todo > config.smoke_size


class BootstrapWork(RowWork[BootstrapRun]):
    queryset = BootstrapRun.objects.select_related(
        "teacher__project", "program_version", "trainset"
    )

    def run(self) -> Ending:
        from jobs.engine.bootstrap import bootstrap

        run = self.row
        model_policy.check_model(run.teacher)
        examples, demos, skip = runs.bootstrap_inputs(run)
        spec = run.program_version.to_spec()
        config = run.bootstrap_config()
        row_indices = [example["index"] for example in examples]

        def store_search(search: DemoSearch) -> None:
            record = runs.demo_search_record(search, row_indices, demos, spec.input_fields)
            BootstrapRun.objects.filter(pk=run.pk).update(demo_search=record)

        def teach(todo: list[dict[str, Any]], on_trace: TraceSink) -> BootstrapProgress:
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
                demo_positions=runs.chosen_demo_positions(run.demo_search, row_indices),
                on_demo_search=store_search,
            )

        chosen = examples[: config.limit] if config.limit else examples
        if needs_smoke_test(run, config, len(chosen) - len(skip)):
            if self.smoke_test(config, chosen, teach):
                return Ending(Status.CHECKED)
            skip = set(run.traces.values_list("example_index", flat=True))
        teach(examples, self.on_trace)
        return Ending(Status.CANCELLED if run.stop_requested() else Status.SUCCEEDED)

    def smoke_test(
        self,
        config: BootstrapConfig,
        examples: list[dict[str, Any]],
        teach: Callable[[list[dict[str, Any]], TraceSink], BootstrapProgress],
    ) -> bool:
        """Bootstrap the stratified sample (its traces are the run's: the rest skips them) and
        store its figures and forecast. True when they look broken: the run pauses "checked"."""
        from jobs.engine.evaluate import price_per_token

        run = self.row
        metric = run.metric_spec()
        sample = smoke.sample_examples(examples, metric.field, config.smoke_size, config.demo_seed)
        records: list[dict[str, Any]] = []

        def keep(record: dict[str, Any]) -> None:
            records.append(record)
            self.on_trace(record)

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
        self.flush()
        return bool(found["problems"]) and not run.stop_requested()

    def on_trace(self, record: dict[str, Any]) -> None:
        """Each finished example is stored at once; the run's counters follow, throttled."""
        if record.get("error"):
            record = {**record, "error": errors.public_text(record["error"])}
        record_traces(self.row, [record])
        self.progressed(self.flush)

    def flush(self) -> None:
        runs.refresh_run_counts(self.row)
