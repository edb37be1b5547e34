"""Idempotent set-up of projects, users, models, trainsets and programs from files.

Shared by `manage.py devserver` (the demo project) and `manage.py distill` (files from the CLI).
"""

from __future__ import annotations

import os
from pathlib import Path

from django.contrib.auth.models import User
from django.core.files import File
from django.utils.text import slugify

from jobs import imports, services
from jobs.engine.model_store import BUNDLED_NAME
from jobs.models import LanguageModel, Membership, ProgramVersion, Project, Trainset

DEMO_DIR = Path(__file__).resolve().parent / "demo"
DEMO_TRAINSET = DEMO_DIR / "sentiment.jsonl"
DEMO_PROGRAM = DEMO_DIR / "sentiment_program.json"
DEMO_USERNAME = "demo"


def ensure_project(name: str) -> Project:
    project = Project.objects.filter(name=name).first()
    if project is None:
        slug = slugify(name) or "project"
        if Project.objects.filter(slug=slug).exists():
            slug = f"{slug}-{Project.objects.count() + 1}"
        project = Project.objects.create(name=name, slug=slug)
    return project


def ensure_member(project: Project, user: User, role: str) -> None:
    Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})


def ensure_user(username: str, *, password: str | None = None, staff: bool = False) -> User:
    user, _ = User.objects.get_or_create(username=username)
    if password is None:
        if not user.has_usable_password():
            user.set_unusable_password()
    else:
        user.set_password(password)
    user.is_staff = user.is_superuser = staff
    user.save()
    return user


def ensure_model(project: Project, name: str, *, user: User | None = None) -> LanguageModel:
    """A model registered in the project under ``name``, or a local model named so (e.g. "smollm2")."""
    model = LanguageModel.objects.filter(project=project, name=name).first()
    if model is None:
        model = LanguageModel.objects.create(
            project=project,
            name=name,
            kind=LanguageModel.Kind.LOCAL,
            model_name=name,
            fine_tunable=True,
            created_by=user,
        )
    return model


def import_trainset_file(
    project: Project, path: Path, user: User, *, name: str | None = None
) -> Trainset:
    """Import a JSONL/CSV file through the same validation as uploads; ValueError lists the problems."""
    from jobs.engine.trainsets import detect_format

    fmt = detect_format(path.name)
    with path.open("rb") as fh:
        outcome = imports.import_upload(
            project=project, user=user, upload=File(fh, name=path.name), name=name or path.stem,
            fmt=fmt, skip_bad_rows=False, dev_ratio=0.2, split_seed=0,
        )  # fmt: skip
    if outcome.queued:
        raise ValueError(f"{path}: too large to import here; upload it in the web app instead")
    if outcome.trainset is None:
        more = f" (and {outcome.more_errors} more)" if outcome.more_errors else ""
        raise ValueError(f"{path}: " + "; ".join(map(str, outcome.errors[:3])) + more)
    return outcome.trainset


def import_program_file(project: Project, path: Path, user: User) -> ProgramVersion:
    """A program spec from JSON/YAML; ProgramSpecError (a ValueError) names the problem."""
    from jobs.engine.programs import parse_program_spec

    fmt = "yaml" if path.suffix.lower() in (".yaml", ".yml") else "json"
    spec = parse_program_spec(path.read_bytes(), fmt=fmt)
    return services.create_program_version(
        project=project, name=spec.name, source=spec.to_dict(), user=user
    )


def seed_demo() -> tuple[User, str]:
    """The demo project: user, trainset, program and the bundled model as teacher and student."""
    password = os.environ.get("BFT_DEMO_PASSWORD", "demo")
    user = ensure_user(DEMO_USERNAME, password=password, staff=True)
    project = ensure_project("demo")
    ensure_member(project, user, Membership.Role.OWNER)
    ensure_model(project, BUNDLED_NAME, user=user)
    if not project.trainsets.filter(name=DEMO_TRAINSET.stem).exists():
        import_trainset_file(project, DEMO_TRAINSET, user)
    import_program_file(project, DEMO_PROGRAM, user)
    return user, password
