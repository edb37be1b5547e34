"""Bootstrap a teacher over a trainset and fine-tune a student, through the same forms, services
and queues as the web app: the run and the fine-tune are the web forms filled in from the options
(``run_options()``, ``job_options()``), so every rule and default is the pages'."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from jobs import seed
from jobs.engine.model_store import BUNDLED_NAME
from jobs.engine.programs import ProgramSpec
from jobs.engine.types import DEMO_STRATEGIES, FinetuneConfig, MetricSpec
from jobs.forms.finetunes import FinetuneForm
from jobs.forms.runs import BootstrapRunForm
from jobs.management.forms import (
    FINETUNE_FORM_OPTIONS,
    RUN_FORM_OPTIONS,
    finetune_form_data,
    run_form_data,
    valid_form,
)
from jobs.management.waiting import describe_progress, wait_for
from jobs.models import (
    BootstrapRun,
    Evaluation,
    FinetuneJob,
    LanguageModel,
    Membership,
    Project,
)
from jobs.services import (
    comparisons,
    finetunes,
    model_policy,
    programs,
    queue,
    runs,
    trace_sets,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import User

DISTILL_USERNAME = "distill"
WORKER_HINT = "python manage.py rqworker default gpu --worker-class jobs.worker.BftWorker"


def parse_metric(text: str, default_field: str) -> MetricSpec:
    """NAME:FIELD[:THRESHOLD]; FIELD may be empty (``default_field``: see :func:`labelled_output`)."""
    parts = text.split(":")
    if not 1 <= len(parts) <= 3 or not parts[0]:
        raise ValueError(
            f"--metric {text!r}: expected NAME:FIELD[:THRESHOLD], e.g. exact_match:sentiment"
        )
    threshold = 1.0
    if len(parts) == 3:
        try:
            threshold = float(parts[2])
        except ValueError:
            raise ValueError(
                f"--metric {text!r}: the threshold {parts[2]!r} is not a number"
            ) from None
    return MetricSpec(
        name=parts[0],
        field=(parts[1] if len(parts) > 1 else "") or default_field,
        threshold=threshold,
    )


def labelled_output(spec: ProgramSpec, fields: list[str] | None) -> str:
    """The metric's default field: the program output the trainset labels, the last module's
    first (the final answer, not an intermediate field); with no labelled output (or no readable
    trainset), the last module's first output, which fit_problems then names as unlabelled."""
    for module in reversed(spec.modules):
        for output in module.outputs:
            if fields is not None and output.name in fields:
                return output.name
    return spec.modules[-1].outputs[0].name


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError(text)
    return value


def share(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise ValueError(text)
    return value


def temperature(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 2:
        raise ValueError(text)
    return value


def run_form_default(name: str) -> Any:
    """The bootstrap run form's initial value of ``name``: distill's default is the web form's."""
    return BootstrapRunForm.base_fields[name].initial


def finetune_default(name: str) -> Any:
    """FinetuneConfig's default of ``name``, which the fine-tune form shows too."""
    return FinetuneConfig.__dataclass_fields__[name].default


def finetune_config(options: dict[str, Any], base_model: str) -> FinetuneConfig:
    """The fine-tune's config: the options distill exposes, FinetuneConfig's defaults for the rest."""
    return FinetuneConfig(
        base_model=base_model,
        epochs=options["epochs"],
        learning_rate=options["learning_rate"],
        batch_size=options["batch_size"],
        lora_r=options["lora_r"],
        lora_alpha=options["lora_alpha"],
    )


def describe_default(value: Any, none: str) -> str:
    return none if value is None else str(value)


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def file_problems(options: dict[str, Any]) -> tuple[list[str], MetricSpec | None]:
    """What is wrong with the program file, the trainset file and the metric (nothing is written);
    and the metric, when it is usable."""
    from jobs.engine.metrics import validate_metric_spec
    from jobs.engine.programs import parse_program_spec

    problems: list[str] = []
    path: Path = options["program"]
    try:
        spec = parse_program_spec(path.read_bytes(), fmt=seed.program_format(path))
    except ValueError as exc:
        problems.append(f"{path}: {exc}")
        spec = None
    try:
        fields = seed.check_trainset_file(options["trainset"])
    except ValueError as exc:
        problems.append(str(exc))
        fields = None
    if spec is None:
        return problems, None
    try:
        metric = parse_metric(options["metric"], labelled_output(spec, fields))
        validate_metric_spec(metric, spec.output_fields)
    except ValueError as exc:
        problems.append(str(exc) if str(exc).startswith("--metric") else f"--metric: {exc}")
        return problems, None
    if fields is not None:
        problems += programs.fit_problems(spec, fields, metric.field)
    return problems, metric


def model_problems(project: Project | None, model: LanguageModel, option: str) -> list[str]:
    """Why this installation refuses ``model`` (jobs.services.model_policy), one message each."""
    refused = model_policy.model_problems(
        project=project,
        kind=model.kind,
        model_name=model.model_name,
        api_base=model.api_base,
        api_key_env=model.api_key_env,
    )
    return [f"{option} {model.name}: {message}" for message in refused.values()]


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (a supervisor, `kill`, a container stop) raises KeyboardInterrupt, so it cancels the
    current run or job as Ctrl-C does; the previous handler is restored afterwards."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Command(BaseCommand):
    help = (
        "Distill a teacher into a student: import the trainset and program, bootstrap traces with the "
        "teacher, fine-tune the student on the passing traces, and print the new model id and its artifacts."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--trainset", required=True, type=Path, help="JSONL or CSV file")
        parser.add_argument(
            "--program", required=True, type=Path, help="program spec, JSON or YAML"
        )
        parser.add_argument(
            "--teacher",
            default=BUNDLED_NAME,
            help="a model name in the project, or a local model (default: %(default)s)",
        )
        parser.add_argument(
            "--student",
            default=BUNDLED_NAME,
            help="a fine-tunable local model (default: %(default)s)",
        )
        parser.add_argument(
            "--metric",
            default="exact_match:",
            help=(
                "NAME:FIELD[:THRESHOLD] (default: exact_match on the program output the trainset "
                "labels, the last module's first)"
            ),
        )
        parser.add_argument(
            "--limit", type=positive_int, default=None, help="bootstrap at most N examples"
        )
        bootstrap = parser.add_argument_group(
            "bootstrap (the teacher); defaults are the run form's"
        )
        bootstrap.add_argument(
            "--demos",
            type=non_negative_int,
            default=run_form_default("num_demos"),
            help="labeled demos given to the teacher (default: %(default)s)",
        )
        bootstrap.add_argument(
            "--demo-strategy",
            choices=DEMO_STRATEGIES,
            default=run_form_default("demo_strategy"),
            help=(
                "how the demos are chosen: the best of a few stratified sets, scored by the teacher "
                "on held train rows, or a seeded random sample (default: %(default)s)"
            ),
        )
        bootstrap.add_argument(
            "--threads",
            type=positive_int,
            default=run_form_default("num_threads"),
            help="examples run in parallel (default: %(default)s)",
        )
        bootstrap.add_argument(
            "--temperature",
            type=temperature,
            default=run_form_default("temperature"),
            help="the teacher's sampling temperature, 0 to 2 (default: the model's own)",
        )
        bootstrap.add_argument(
            "--retries",
            type=non_negative_int,
            default=run_form_default("retries"),
            help="best-of-N: a failing answer is asked again up to N times at the retry "
            "temperature (default: %(default)s)",
        )
        bootstrap.add_argument(
            "--retry-temperature",
            type=temperature,
            default=run_form_default("retry_temperature"),
            help="the teacher's temperature for retries (default: %(default)s)",
        )
        bootstrap.add_argument(
            "--smoke-size",
            type=non_negative_int,
            default=run_form_default("smoke_size"),
            help="bootstrap this many label-balanced examples first and stop when they look broken "
            "(few pass, most unparsed, one answer for all); 0: no smoke test (default: %(default)s)",
        )
        training = parser.add_argument_group(
            "fine-tune (the student); defaults are the fine-tune form's"
        )
        training.add_argument(
            "--epochs",
            type=positive_int,
            default=finetune_default("epochs"),
            help=(
                "passes over the training rows (default: auto, enough for "
                f"{finetune_default('min_steps')} optimizer steps)"
            ),
        )
        training.add_argument(
            "--lr",
            "--learning-rate",
            dest="learning_rate",
            type=positive_float,
            default=finetune_default("learning_rate"),
            help="peak learning rate of the LoRA weights (default: %(default)s)",
        )
        training.add_argument(
            "--batch-size",
            type=positive_int,
            default=finetune_default("batch_size"),
            help="training rows per micro-batch (default: %(default)s)",
        )
        training.add_argument(
            "--lora-r",
            type=positive_int,
            default=finetune_default("lora_r"),
            help="LoRA rank (default: %(default)s)",
        )
        training.add_argument(
            "--lora-alpha",
            type=positive_int,
            default=finetune_default("lora_alpha"),
            help="LoRA scaling; alpha / r multiplies the update (default: %(default)s)",
        )
        training.add_argument(
            "--max-label-share",
            type=share,
            default=trace_sets.DEFAULT_MAX_LABEL_SHARE,
            help=(
                "cap any one label's share of the training rows, e.g. 0.5: the biggest labels' "
                "excess traces are left out, seeded (default: "
                f"{describe_default(trace_sets.DEFAULT_MAX_LABEL_SHARE, 'no cap')})"
            ),
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help=(
                "go on past a smoke test that looks broken, and train even when one label is over "
                f"{trace_sets.COLLAPSE_SHARE:.0%} of the training rows (both stop by default)"
            ),
        )
        parser.add_argument(
            "--no-eval",
            action="store_true",
            help="skip the closing evaluation of teacher, base student and student on the "
            "trainset's dev split",
        )
        parser.add_argument(
            "--project",
            default="distill",
            help="project to record everything in (default: %(default)s)",
        )
        parser.add_argument(
            "--sync",
            action="store_true",
            help="run the tasks in this process instead of waiting for a worker",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        for name in ("trainset", "program"):
            path: Path = options[name]
            if not path.is_file():
                raise CommandError(f"--{name} {path}: no such file")
        if not options["sync"]:
            self.check_queue()
        try:
            with (
                queue.tasks_inline() if options["sync"] else contextlib.nullcontext(),
                sigterm_as_ctrl_c(),
            ):
                run, job = self.distill(options)
                self.stdout.write(self.style.SUCCESS(f"model id: {job.output_model_id}"))
                self.stdout.write(
                    f"run {run.pk}: {run.done} traces, {run.passed} passed; "
                    f"job {job.pk}: {job.step} steps"
                )
                for path in sorted(Path(job.output_dir).iterdir()):
                    self.stdout.write(f"artifact: {path}")
                if not options["no_eval"]:
                    self.evaluate(job)
        except ValueError as exc:  # bad files, metric, models or settings
            raise CommandError(str(exc)) from None

    def check_inputs(self, options: dict[str, Any]) -> tuple[MetricSpec, FinetuneConfig]:
        """Every file, model and setting, checked before anything is written; ValueError lists
        every problem found."""
        from jobs.engine.finetune import validate_config

        problems, metric = file_problems(options)
        project = Project.objects.filter(name=options["project"]).first()  # None: a new one
        teacher = seed.find_model(project, options["teacher"])
        student = seed.find_model(project, options["student"])
        problems += model_problems(project, teacher, "--teacher")
        problems += model_problems(project, student, "--student")
        if not student.is_local:
            problems.append(
                f"--student {student.name}: a {student.kind} model; only local models fine-tune here"
            )
        elif not student.fine_tunable:
            problems.append(f"--student {student.name}: not marked fine-tunable")
        config = finetune_config(options, student.model_name)
        try:
            validate_config(config)
        except ValueError as exc:
            problems.append(str(exc))
        if problems or metric is None:
            raise ValueError("\n".join(problems))
        return metric, config

    def distill(self, options: dict[str, Any]) -> tuple[BootstrapRun, FinetuneJob]:
        """The phases, in order: check and record the inputs, bootstrap, fine-tune."""
        metric, finetune_config = self.check_inputs(options)
        run, student, user = self.bootstrap(options, metric)
        job = self.finetune(options, run, student, user, finetune_config)
        return run, job

    def bootstrap(
        self, options: dict[str, Any], metric: MetricSpec
    ) -> tuple[BootstrapRun, LanguageModel, User]:
        """Record the project, files and models; run the teacher over the train split."""
        with transaction.atomic():  # and should anything still fail here, nothing is kept
            user = seed.ensure_user(DISTILL_USERNAME)
            project = seed.ensure_project(options["project"])
            seed.ensure_member(project, user, Membership.Role.OPERATOR)
            program = seed.import_program_file(project, options["program"], user)
            trainset = seed.import_trainset_file(project, options["trainset"], user)
            teacher = seed.ensure_model(project, options["teacher"], user=user)
            student = seed.ensure_model(project, options["student"], user=user)
            finetunes.check_student(student, project)
            self.stdout.write(
                f"project {project.name!r}: trainset {trainset.name!r} ({trainset.row_count} rows), "
                f"program {program}, teacher {teacher.model_name}, student {student.model_name}"
            )
            data = run_form_data(
                options, trainset=trainset, program_version=program, teacher=teacher, metric=metric
            )
            form = valid_form(BootstrapRunForm(data, project=project), RUN_FORM_OPTIONS)
            run = runs.create_bootstrap_run(project=project, user=user, **form.run_options())
        wait_for(
            run,
            lambda r: (
                f"bootstrap {r.done}/{r.total}: {r.passed} passed, {r.failed} failed, {r.errored} errored"
            ),
            self.stdout,
            on_checked=lambda r: self.smoke_checked(r, force=options["force"]),
        )
        return run, student, user

    def smoke_checked(self, run: BootstrapRun, *, force: bool) -> None:
        """The smoke test paused the run: print its figures, then stop, or go on with --force."""
        found = run.smoke
        forecast = found.get("forecast", {})
        self.stdout.write(
            f"smoke test: {found.get('passed', 0)}/{found.get('sample', 0)} passed, "
            f"{found.get('parsed', 0)} parsed; forecast for {forecast.get('examples', '?')} "
            f"examples: {forecast.get('kept', '?')} kept traces "
            f"({forecast.get('kept_low', '?')}-{forecast.get('kept_high', '?')}), "
            f"{forecast.get('lm_calls', '?')} LM calls"
        )
        reasons = "; ".join(found.get("problems", [])) or "it looks broken"
        if not force:
            raise CommandError(
                f"the smoke test stopped run {run.pk}: {reasons}. Change the teacher, its demos "
                "(--demos, --demo-strategy) or the metric, or go on anyway with --force"
            )
        self.stderr.write(f"warning: smoke test: {reasons} (--force: going on)")
        runs.continue_run(row=run)

    def finetune(
        self,
        options: dict[str, Any],
        run: BootstrapRun,
        student: LanguageModel,
        user: User,
        config: FinetuneConfig,
    ) -> FinetuneJob:
        """Freeze the passing traces (capped, when asked), refuse a collapsed set unless --force,
        and train the student on them."""
        selection = FinetuneJob.Selection.PASSING
        cap = options["max_label_share"]
        balance = trace_sets.selection_balance(run, selection, max_share=cap)  # ValueError: no cap
        if balance.dropped:
            left_out = ", ".join(f"{n} {label!r}" for label, n in balance.dropped)
            self.stdout.write(f"label cap {cap:g}: leaves out {left_out}")
        if balance.collapsed:
            message = (
                f"the passing traces collapsed onto one label: {balance.describe()}, over "
                f"{trace_sets.COLLAPSE_SHARE:.0%}; a student trained on them learns to always "
                "answer it"
            )
            if not options["force"]:
                raise CommandError(
                    f"{message}. Cap it with --max-label-share 0.5, change the teacher's demos or "
                    "prompt, or train anyway with --force"
                )
            self.stderr.write(f"warning: {message} (--force: training anyway)")
        data = finetune_form_data(
            config,
            student=student,
            selection=selection,
            max_label_share=cap,
            evaluate_when_done=not options["no_eval"],
        )
        form = valid_form(FinetuneForm(data, run=run), FINETUNE_FORM_OPTIONS)
        job = finetunes.create_finetune_job(run=run, user=user, **form.job_options())
        plan = job.config.get(FinetuneConfig.PLAN_KEY, {})
        self.stdout.write(f"fine-tune plan: {plan.get('summary', '?')}")
        for warning in plan.get("warnings", []):
            self.stderr.write(f"warning: {warning}")
        wait_for(
            job,
            lambda j: (
                f"fine-tune step {j.step}/{j.total_steps or '?'}"
                + (f", loss {j.last_loss:.4f}" if j.last_loss is not None else "")
            ),
            self.stdout,
        )
        return job

    def evaluate(self, job: FinetuneJob) -> None:
        """Wait for the evaluation the job queued when it succeeded and print the comparison."""
        evaluation = Evaluation.objects.filter(finetune_job=job).order_by("-pk").first()
        if evaluation is None:  # the worker's log says why
            self.stdout.write(
                "no evaluation: the trainset has no dev rows with every field the program needs"
            )
            return
        wait_for(evaluation, describe_progress, self.stdout)
        self.stdout.write(comparisons.compare(evaluation).text_table())

    def check_queue(self) -> None:
        health = queue.queue_health()
        if not health.redis_ok:
            raise CommandError(
                f"Redis does not answer at the configured REDIS_URL ({health.error}); or use --sync"
            )
        for name in ("default", "gpu"):
            if not health.workers_for(name):
                self.stdout.write(f"no worker on queue {name!r} yet; start one with: {WORKER_HINT}")
