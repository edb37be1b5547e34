"""Score models side by side on a trainset's rows and print the comparison (the evaluation page's
table), through the same service and queue as the web app."""

from __future__ import annotations

import contextlib
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs.management.commands.distill import (
    labelled_output,
    parse_metric,
    positive_int,
    sigterm_as_ctrl_c,
)
from jobs.management.waiting import describe_progress, wait_for
from jobs.models import (
    BootstrapRun,
    Evaluation,
    EvaluationCandidate,
    LanguageModel,
    Membership,
    ProgramVersion,
    Project,
    Trainset,
)
from jobs.services import comparisons, evaluations, queue

Role = EvaluationCandidate.Role
Prompting = EvaluationCandidate.Prompting


def parse_rows(text: str) -> tuple[str, str]:
    """TRAINSET[:SPLIT] -> (trainset name, split); the split defaults to dev."""
    name, _, split = text.rpartition(":") if ":" in text else (text, "", "dev")
    if split not in Evaluation.Split.values:
        raise ValueError(f"--rows {text!r}: the split must be one of {Evaluation.Split.values}")
    return name, split


class Command(BaseCommand):
    help = (
        "Evaluate models side by side on a trainset's rows (its dev split by default) and print "
        "the comparison: pass rates with intervals, latency, tokens, and each model against the "
        "teacher."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="the project's name")
        parser.add_argument(
            "--rows",
            required=True,
            help="TRAINSET[:SPLIT], a trainset of the project and dev (default), train or all",
        )
        parser.add_argument(
            "--models", required=True, help="comma-separated model names of the project"
        )
        parser.add_argument(
            "--program", help="PROGRAM[@VERSION] of the project (default: the run's program)"
        )
        parser.add_argument(
            "--run",
            type=positive_int,
            help="a bootstrap run: its teacher, when listed, is prompted with the run's demos "
            "and temperature; its metric and program are the defaults",
        )
        parser.add_argument(
            "--metric",
            help="NAME:FIELD[:THRESHOLD] (default: the run's, else exact_match on the labelled "
            "output)",
        )
        parser.add_argument("--limit", type=positive_int, help="evaluate at most N rows")
        parser.add_argument("--threads", type=positive_int, default=8, help="default: 8")
        parser.add_argument(
            "--sync", action="store_true", help="run in this process instead of on a worker"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        with (
            queue.tasks_inline() if options["sync"] else contextlib.nullcontext(),
            sigterm_as_ctrl_c(),
        ):
            try:
                evaluation = self.create(options)  # --sync: it runs here, on commit
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            wait_for(evaluation, describe_progress, self.stdout)
        self.stdout.write(comparisons.compare(evaluation).text_table())

    def create(self, options: dict[str, Any]) -> Evaluation:
        project = Project.objects.filter(name=options["project"]).first()
        if project is None:
            raise ValueError(f"--project {options['project']!r}: no such project")
        run = None
        if options["run"]:
            run = BootstrapRun.objects.filter(project=project, pk=options["run"]).first()
            if run is None:
                raise ValueError(f"--run {options['run']}: no such run in {project.name!r}")
        version = self.program_version(project, options["program"], run)
        trainset_name, split = parse_rows(options["rows"])
        trainset = Trainset.objects.filter(project=project, name=trainset_name).first()
        if trainset is None:
            raise ValueError(f"--rows: no trainset {trainset_name!r} in {project.name!r}")
        if options["metric"]:
            metric = parse_metric(
                options["metric"], labelled_output(version.to_spec(), trainset.field_names)
            )
        elif run is not None:
            metric = run.metric_spec()
        else:
            metric = parse_metric(
                "exact_match:", labelled_output(version.to_spec(), trainset.field_names)
            )
        candidates = [
            self.candidate(project, name.strip(), run)
            for name in options["models"].split(",")
            if name.strip()
        ]
        owner = (
            Membership.objects.filter(project=project, role=Membership.Role.OWNER)
            .select_related("user")
            .first()
        )
        user = run.created_by if run is not None else (owner.user if owner else None)
        if user is None:
            raise ValueError(f"project {project.name!r} has no owner to record the evaluation")
        return evaluations.create_evaluation(
            project=project,
            program_version=version,
            trainset=trainset,
            split=split,
            metric=metric,
            candidates=candidates,
            user=user,
            run=run,
            limit=options["limit"],
            num_threads=options["threads"],
        )

    def program_version(
        self, project: Project, text: str | None, run: BootstrapRun | None
    ) -> ProgramVersion:
        if not text:
            if run is None:
                raise ValueError("--program is needed without --run")
            return run.program_version
        name, _, number = text.partition("@")
        versions = ProgramVersion.objects.filter(program__project=project, program__name=name)
        if number:
            if not number.isdigit():
                raise ValueError(f"--program {text!r}: the version must be a number")
            versions = versions.filter(version=int(number))
        version = versions.order_by("-version").first()
        if version is None:
            raise ValueError(f"--program {text!r}: no such program version in {project.name!r}")
        return version

    def candidate(
        self, project: Project, name: str, run: BootstrapRun | None
    ) -> evaluations.CandidateChoice:
        model = LanguageModel.objects.filter(project=project, name=name).first()
        if model is None:
            known = ", ".join(project.models.values_list("name", flat=True))
            raise ValueError(f"--models: no model {name!r} in {project.name!r} (known: {known})")
        if run is not None and model.pk == run.teacher_id:
            return evaluations.CandidateChoice(model, Role.TEACHER, Prompting.RUN_DEMOS)
        if model.source_job_id:
            return evaluations.CandidateChoice(model, Role.STUDENT)
        if model.student_jobs.exists():
            return evaluations.CandidateChoice(model, Role.BASE)
        return evaluations.CandidateChoice(model)
