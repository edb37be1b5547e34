"""Idempotent set-up of projects, users, models, trainsets and programs from files.

Shared by `manage.py devserver` (the demo project) and `manage.py distill` (files from the CLI).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.contrib.auth.models import User
from django.core.files import File
from django.utils.text import slugify

from jobs.engine.model_store import BUNDLED_NAME
from jobs.engine.programs import parse_program_spec
from jobs.engine.trainsets import detect_format
from jobs.models import LanguageModel, Membership, ProgramVersion, Project, Trainset
from jobs.services import programs, trainsets

DEMO_DIR = Path(__file__).resolve().parent / "demo"
DEMO_TRAINSET = DEMO_DIR / "sentiment.jsonl"
DEMO_PROGRAM = DEMO_DIR / "sentiment_program.json"
DEMO_USERNAME = "demo"
MAX_SHOWN_ERRORS = 50  # a file's errors listed in a message, then "and N more"


def ensure_project(name: str) -> Project:
    project = Project.objects.filter(name=name).first()
    if project is None:
        slug = slugify(name) or "project"
        if Project.objects.filter(slug=slug).exists():
            slug = f"{slug}-{Project.objects.count() + 1}"
        project = Project.objects.create(name=name, slug=slug)
    return project


def ensure_member(project: Project, user: User, role: str) -> Membership:
    """``user``'s membership of ``project``, created with ``role`` when missing; an existing one keeps
    its role (an owner is never demoted)."""
    membership, _ = Membership.objects.get_or_create(
        project=project, user=user, defaults={"role": role}
    )
    return membership


def ensure_user(username: str, *, password: str | None = None, superuser: bool = False) -> User:
    """The user ``username``, created when missing (with ``password``, or no usable password, and
    staff and superuser rights when ``superuser``). An existing user is returned as it is: its
    password and rights are never changed."""
    user = User.objects.filter(username=username).first()
    if user is not None:
        return user
    user = User(username=username, is_staff=superuser, is_superuser=superuser)
    if password is None:
        user.set_unusable_password()
    else:
        user.set_password(password)
    user.save()
    return user


def find_model(project: Project | None, name: str) -> LanguageModel:
    """The model registered in ``project`` under ``name``, or else an unsaved local model named so
    (e.g. "smollm2"), to check before anything is written."""
    model = LanguageModel.objects.filter(project=project, name=name).first() if project else None
    if model is None:
        model = LanguageModel(
            name=name, kind=LanguageModel.Kind.LOCAL, model_name=name, fine_tunable=True
        )
    return model


def ensure_model(project: Project, name: str, *, user: User | None = None) -> LanguageModel:
    """A model registered in the project under ``name``, or a local model named so (e.g. "smollm2")."""
    model = find_model(project, name)
    if model.pk is None:
        model.project, model.created_by = project, user
        model.save()
    return model


def describe_errors(path: Path, errors: list[Any], error_count: int) -> str:
    """A file's first MAX_SHOWN_ERRORS errors, one a line, then "and N more"."""
    shown = [str(error) for error in errors[:MAX_SHOWN_ERRORS]]
    lines = [f"{path}: {error_count} problem(s), nothing was imported:", *shown]
    if error_count > len(shown):
        lines.append(f"and {error_count - len(shown)} more")
    return "\n  ".join(lines)


def check_trainset_file(path: Path) -> list[str]:
    """Validate a JSONL/CSV file as an upload is validated, writing nothing; its field names.

    ValueError lists the problems: any bad row refuses the file, as ``import_trainset_file`` does.
    """
    fmt = detect_format(path.name)
    if trainsets.count_lines(path) - (1 if fmt == "csv" else 0) >= trainsets.async_rows_threshold():
        raise ValueError(f"{path}: too large to import here; upload it in the web app instead")
    report = trainsets.validate(path, fmt)
    errors = [trainsets.error_line(e) for e in report.errors]
    if not report.valid_count and not errors:
        errors = [trainsets.ErrorLine("file", "", "the file holds no rows")]
    if errors:
        raise ValueError(describe_errors(path, errors, max(report.error_count, len(errors))))
    return [field.name for field in report.fields]


def import_trainset_file(
    project: Project, path: Path, user: User, *, name: str | None = None
) -> Trainset:
    """Import a JSONL/CSV file through the same validation as uploads; ValueError lists the problems."""
    fmt = detect_format(path.name)
    with path.open("rb") as fh:
        outcome = trainsets.import_upload(
            project=project,
            user=user,
            upload=File(fh, name=path.name),
            name=name or path.stem,
            fmt=fmt,
            skip_bad_rows=False,
            dev_ratio=0.2,
            split_seed=0,
        )
    if outcome.queued:
        raise ValueError(f"{path}: too large to import here; upload it in the web app instead")
    if outcome.trainset is None:
        raise ValueError(describe_errors(path, outcome.errors, outcome.error_count))
    return outcome.trainset


def program_format(path: Path) -> str:
    return "yaml" if path.suffix.lower() in (".yaml", ".yml") else "json"


def import_program_file(project: Project, path: Path, user: User) -> ProgramVersion:
    """A program spec from JSON/YAML; ProgramSpecError (a ValueError) names the problem."""
    spec = parse_program_spec(path.read_bytes(), fmt=program_format(path))
    return programs.create_program_version(
        project=project, name=spec.name, source=spec.to_dict(), user=user
    )


def seed_demo() -> tuple[User, str | None]:
    """The demo project: user, trainset, program and the bundled model as teacher and student.

    The demo account is created (a superuser, password BFT_DEMO_PASSWORD or "demo") only when it is
    missing; returns it with that password, or None for an account that already existed.
    """
    created = not User.objects.filter(username=DEMO_USERNAME).exists()
    password = os.environ.get("BFT_DEMO_PASSWORD", "demo")
    user = ensure_user(DEMO_USERNAME, password=password, superuser=True)
    project = ensure_project("demo")
    ensure_member(project, user, Membership.Role.OWNER)
    ensure_model(project, BUNDLED_NAME, user=user)
    if not project.trainsets.filter(name=DEMO_TRAINSET.stem).exists():
        import_trainset_file(project, DEMO_TRAINSET, user)
    import_program_file(project, DEMO_PROGRAM, user)
    return user, password if created else None
