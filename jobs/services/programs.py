"""Programs: versions of a declarative spec, and whether a program fits a trainset."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction
from django.db.models import Max

from jobs.engine.metrics import validate_metric_spec
from jobs.engine.programs import ProgramSpec, ProgramSpecError, check_fields, parse_program_spec
from jobs.models import Program, ProgramVersion, Project, Trainset

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from jobs.engine.types import MetricSpec


def create_program_version(
    *,
    project: Project,
    name: str,
    source: str | bytes | dict[str, Any],
    user: User,
    fmt: str | None = None,
) -> ProgramVersion:
    """Parse and validate a declarative spec; store it as the named program's next version (or
    return the latest one when the spec did not change). ProgramSpecError names what is wrong."""
    spec = parse_program_spec(source, fmt=fmt)
    program, _ = Program.objects.get_or_create(
        project=project, name=name, defaults={"created_by": user}
    )
    version, _ = add_version(program=program, spec=spec, user=user)
    return version


class ProgramNameTaken(ValueError):
    """The project already has a program of that name (edit it to add a version)."""


def create_program(*, project: Project, spec: ProgramSpec, user: User) -> Program:
    """A new program with ``spec`` as its version 1; ProgramNameTaken if the name is in use."""
    try:
        with transaction.atomic():
            program = Program.objects.create(project=project, name=spec.name, created_by=user)
            ProgramVersion.objects.create(
                program=program, version=1, spec=spec.to_dict(), created_by=user
            )
    except IntegrityError as exc:
        raise ProgramNameTaken(
            f"this project already has a program named “{spec.name}”; edit it to add a version"
        ) from exc
    return program


def add_version(*, program: Program, spec: ProgramSpec, user: User) -> tuple[ProgramVersion, bool]:
    """Save ``spec`` as the program's next version: (version, True); or (latest, False) when the
    latest version already has this spec. Versions never change once saved."""
    with transaction.atomic():
        Program.objects.select_for_update().filter(pk=program.pk).first()
        latest = program.latest_version
        if latest is not None and same_spec(latest.spec, spec):
            return latest, False
        number = (program.versions.aggregate(n=Max("version"))["n"] or 0) + 1
        version = ProgramVersion.objects.create(
            program=program, version=number, spec=spec.to_dict(), created_by=user
        )
    return version, True


def same_spec(stored: dict[str, Any], spec: ProgramSpec) -> bool:
    """Whether a stored spec says the same as ``spec`` (compared after parsing both)."""
    try:
        return parse_program_spec(stored).to_dict() == spec.to_dict()
    except ProgramSpecError:
        return False


class Misfit(ValueError):
    """A program that cannot run on a trainset as asked; ``field`` names the input at fault, as
    the run and evaluation forms call it: program_version, metric_field or trainset."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


def _misfits(
    spec: ProgramSpec,
    trainset_fields: Iterable[str],
    metric_field: str | None,
    *,
    need_a_label: bool,
    program: str,
) -> list[tuple[str, str]]:
    """(field at fault, why) for each way the program does not fit: the one rule."""
    fields = list(trainset_fields)
    labels = [metric_field] if metric_field else []
    found = [("trainset", problem) for problem in check_fields(spec, fields, label_fields=labels)]
    if metric_field and metric_field not in spec.output_fields:
        found.append(
            (
                "metric_field",
                f"metric field “{metric_field}” is not a program output: it is not an output of "
                f"{program} (outputs: {', '.join(spec.output_fields)})",
            )
        )
    if need_a_label and not any(name in fields for name in spec.output_fields):
        found.append(
            (
                "trainset",
                f"no label column for any output ({', '.join(spec.output_fields)}), "
                "so no metric can score it",
            )
        )
    return found


def fit_problems(
    spec: ProgramSpec,
    trainset_fields: Iterable[str],
    metric_field: str | None,
    *,
    need_a_label: bool = False,
    program: str = "",
) -> list[str]:
    """Why the program cannot run on a trainset with these fields, scored on ``metric_field``;
    empty when it fits. Every program input must be a trainset field, and the metric field must
    be a program output that the trainset labels. ``need_a_label`` (a program's page, where no
    metric is chosen yet): the trainset must label at least one output. ``program`` names it in
    the messages (default: the spec's name)."""
    found = _misfits(
        spec,
        trainset_fields,
        metric_field,
        need_a_label=need_a_label,
        program=program or spec.name,
    )
    return [problem for _field, problem in found]


def check_fit(
    program_version: ProgramVersion, trainset: Trainset, metric_field: str
) -> ProgramSpec:
    """The one check that a program version fits a trainset, scored on ``metric_field`` (the
    run and evaluation forms', and the services' before they queue): its spec parses, the metric
    field is one of its outputs, and the trainset has every input and labels the metric field.
    Returns the spec; Misfit naming the field at fault."""
    try:
        spec = program_version.to_spec()
    except ProgramSpecError as e:
        raise Misfit(f"The program's spec is invalid: {e}", field="program_version") from e
    name = version_label(program_version)
    found = _misfits(spec, trainset.field_names, metric_field, need_a_label=False, program=name)
    for field, problem in found:
        if field == "metric_field":
            raise Misfit(problem[0].upper() + problem[1:] + ".", field=field)
    if found:
        problems = "; ".join(problem for _field, problem in found)
        raise Misfit(f"{name} does not fit trainset {trainset.name}: {problems}.", field="trainset")
    return spec


def version_label(program_version: ProgramVersion) -> str:
    return f"{program_version.program.name} v{program_version.version}"


def check_scored_work(
    *,
    project: Project,
    trainset: Trainset,
    program_version: ProgramVersion,
    metric: MetricSpec,
    others: Iterable[tuple[Any, str]] = (),
) -> ProgramSpec:
    """The rules a bootstrap run and an evaluation share before they are queued: the trainset,
    the program and ``others`` ((row, "what") pairs with a project) are the project's, the
    trainset is ready, the program fits the trainset (:func:`check_fit`) and the metric is valid
    on its outputs. Returns the program's spec; ValueError naming the first problem."""
    for obj, what in ((trainset, "trainset"), (program_version.program, "program"), *others):
        if obj.project_id != project.pk:
            raise ValueError(f"The {what} belongs to another project.")
    if trainset.status != Trainset.Status.READY:
        raise ValueError(f"Trainset {trainset.name!r} is not ready ({trainset.status}).")
    spec = check_fit(program_version, trainset, metric.field)
    validate_metric_spec(metric, spec.output_fields)
    return spec
