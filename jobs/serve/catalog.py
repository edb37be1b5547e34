"""The server's database side: who is calling, and which models their project may call.

Plain synchronous Django code; the app runs each call in a worker thread (``in_thread``), never
on the event loop.

Model ids. A project's **local** models are served (a LiteLLM model is someone else's server):
a fine-tuned model is listed under its model id, ``bftweb:<student>:ft-<job>`` (the id the job
page shows, unique in the installation, what the served program JSON names); any other local
model under its name in the project (the Models page's name, e.g. ``smollm2``: never a file
path). A fine-tuned model's project name is accepted too. A model the installation's policy
refuses (``jobs/services/model_policy.py``: another project's fine-tuned id, a file outside the
allowed directories) is neither listed nor served.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import close_old_connections

from jobs.engine.model_store import FINETUNED_PREFIX
from jobs.models import LanguageModel, Project
from jobs.services import api_keys
from jobs.services.model_policy import model_problems

T = TypeVar("T")


@dataclass(frozen=True)
class Caller:
    key_id: int
    project_id: int
    project_slug: str


@dataclass(frozen=True)
class ServedModel:
    id: str  # the id clients send as "model"
    engine_name: str  # what the engine loads: a local model name or a fine-tuned id
    name: str  # the model's name in its project
    owned_by: str  # the project's slug
    created: int
    temperature: float  # the model's defaults, for requests that give none
    max_tokens: int


def authenticate(raw: str) -> Caller | None:
    key = api_keys.authenticate(raw)
    if key is None:
        return None
    return Caller(key_id=key.pk, project_id=key.project_id, project_slug=key.project.slug)


def public_id(model: LanguageModel) -> str:
    if model.model_name.startswith(FINETUNED_PREFIX):
        return model.model_name
    return model.name


def models_of(caller: Caller) -> list[ServedModel]:
    """The caller's project's local models that this installation allows, by id."""
    project = Project.objects.get(pk=caller.project_id)
    served: dict[str, ServedModel] = {}
    rows = LanguageModel.objects.filter(project=project, kind=LanguageModel.Kind.LOCAL)
    for row in rows.order_by("name"):
        if model_problems(project=project, kind=row.kind, model_name=row.model_name):
            continue
        model_id = public_id(row)
        served.setdefault(
            model_id,
            ServedModel(
                id=model_id,
                engine_name=row.model_name,
                name=row.name,
                owned_by=project.slug,
                created=int(row.created.timestamp()),
                temperature=row.temperature,
                max_tokens=row.max_tokens,
            ),
        )
    return list(served.values())


def find_model(caller: Caller, model: str) -> ServedModel | None:
    """The model ``model`` names for the caller: its id, else a fine-tuned model's name."""
    served = models_of(caller)
    for candidate in served:
        if candidate.id == model:
            return candidate
    for candidate in served:
        if candidate.name == model:
            return candidate
    return None


def call(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` with Django's per-request connection handling (a worker thread's view)."""
    close_old_connections()
    try:
        return fn(*args)
    finally:
        close_old_connections()
