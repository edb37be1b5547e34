"""What a project may ask a worker to run: the operator's allow-lists for LM keys, endpoints and files.

A model row names an environment variable (its API key on the workers), maybe an ``api_base`` and,
for local models, a path or a fine-tuned id. Each is a door into the workers, so each is checked
against settings only the operator of the installation controls:

- ``BFT_LM_KEY_VARS`` / ``BFT_LM_KEY_PREFIX``: which variables may be named as API keys;
  ``SECRET_KEY``, ``DATABASE_URL``, ``REDIS_URL`` and the like never, whatever the settings say.
- ``BFT_LM_API_BASES``: the hosts or URL prefixes a custom ``api_base`` may point at (none by
  default: LiteLLM's own provider endpoints only). Providers whose default endpoint is a local
  server (Ollama, vLLM, ...) need an allowed ``api_base``.
- ``BFT_LOCAL_MODEL_DIRS``: where local model files may be read from (the bundled model and the
  model cache always).
- Fine-tuned ids (``bftweb:...``) belong to the project whose fine-tune made them.

The same check runs in the form, the admin, ``distill`` and, again, in the worker right before a
model is used, so a row edited in the database cannot get past it either.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, urlsplit

from django.conf import settings

from jobs.engine.model_store import BUNDLED_NAME, FINETUNED_PREFIX, HUB_ID_RE

if TYPE_CHECKING:
    from jobs.models import LanguageModel, Project

# Never an LM key, whatever the allow-list says: the installation's own secrets and connections.
ALWAYS_REFUSED_VARS = frozenset(
    {"SECRET_KEY", "SECRET_KEY_FILE", "DATABASE_URL", "REDIS_URL", "RQ_REDIS_URL"}
)
# LiteLLM providers whose default endpoint is a server on the worker's own host or network.
LOCAL_DEFAULT_PROVIDERS = frozenset(
    {
        "ollama",
        "ollama_chat",
        "hosted_vllm",
        "vllm",
        "lm_studio",
        "llamafile",
        "xinference",
        "openai_like",
        "custom_openai",
        "litellm_proxy",
        "oobabooga",
        "triton",
    }
)
ENV_VAR_RE = re.compile(r"[A-Z_][A-Z0-9_]{0,99}")


class ModelPolicyError(ValueError):
    """A model this installation does not allow; the message names the setting to change."""


def _csv_setting(name: str) -> list[str]:
    value = getattr(settings, name, "")
    items = value.split(",") if isinstance(value, str) else list(value)
    return [item.strip() for item in items if item and item.strip()]


# --- API key variables ---------------------------------------------------------------------


def key_var_problem(name: str) -> str | None:
    if not name:
        return None
    if not ENV_VAR_RE.fullmatch(name):
        return (
            "Enter the name of an environment variable (capital letters, digits and _, "
            "e.g. OPENAI_API_KEY), not the key itself."
        )
    prefix = getattr(settings, "BFT_LM_KEY_PREFIX", "")
    allowed = name in _csv_setting("BFT_LM_KEY_VARS") or bool(prefix and name.startswith(prefix))
    if name in ALWAYS_REFUSED_VARS or not allowed:
        how = f"start with {prefix} or be" if prefix else "be"
        return (
            f"The variable {name} is not allowed as an API key here: key variables must {how} "
            "listed in the BFT_LM_KEY_VARS setting, which the operator of this installation sets."
        )
    return None


# --- endpoints -----------------------------------------------------------------------------


def _host_port(parts: SplitResult) -> tuple[str, int | None]:
    port = parts.port if parts.port is not None else {"http": 80, "https": 443}.get(parts.scheme)
    return (parts.hostname or "").lower(), port


def _matches(url: str, entry: str) -> bool:
    """``entry`` is a host (``api.together.xyz``, ``10.0.0.5:8000``) or a URL prefix."""
    target = urlsplit(url)
    if "://" not in entry:
        host, _, port = entry.lower().partition(":")
        t_host, t_port = _host_port(target)
        return t_host == host and (not port or str(t_port) == port)
    allowed = urlsplit(entry)
    if allowed.scheme != target.scheme or _host_port(allowed) != _host_port(target):
        return False
    prefix = allowed.path.rstrip("/")
    path = target.path or "/"
    return not prefix or path == prefix or path.startswith(prefix + "/")


def url_allowed(url: str, setting: str) -> bool:
    """Whether ``url`` matches a host or URL prefix listed in the setting named ``setting``
    (BFT_LM_API_BASES here; jobs/services/webhooks.py asks BFT_WEBHOOK_HOSTS the same way)."""
    return any(_matches(url, entry) for entry in _csv_setting(setting))


def allowed_url_problem(url: str, *, setting: str, what: str, credentials_hint: str) -> str | None:
    """Why ``url`` is refused: not an http(s) URL, credentials in it, or no match in the
    allow-list setting ``setting`` (``what`` names the URL in the message); None when allowed."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        return "Enter a valid http:// or https:// URL."
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "Enter an http:// or https:// URL."
    if parts.username or parts.password:
        return f"Credentials in the URL are not allowed; {credentials_hint}."
    if not url_allowed(url, setting):
        return (
            f"This {what} is not allowed here: it must match a host or URL prefix in the "
            f"{setting} setting, which the operator of this installation sets."
        )
    return None


def api_base_problem(api_base: str) -> str | None:
    if not api_base:
        return None
    return allowed_url_problem(
        api_base,
        setting="BFT_LM_API_BASES",
        what="endpoint",
        credentials_hint="name a key variable instead",
    )


def provider_problem(model_name: str, api_base: str) -> str | None:
    provider = model_name.split("/", 1)[0].strip().lower() if "/" in model_name else ""
    if provider in LOCAL_DEFAULT_PROVIDERS and not api_base:
        return (
            f"LiteLLM's {provider} provider talks to a server on the worker's own network: give "
            "its API base URL (allowed by the BFT_LM_API_BASES setting)."
        )
    return None


# --- local models --------------------------------------------------------------------------


def local_model_dirs() -> list[Path]:
    """Where local model files may be read from: the operator's list, the cache, the bundled model."""
    dirs = [Path(d).expanduser() for d in _csv_setting("BFT_LOCAL_MODEL_DIRS")]
    dirs.append(Path(settings.BFT_MODEL_CACHE_DIR))
    try:
        from jobs.engine.model_store import bundled_gguf_path

        dirs.append(bundled_gguf_path().parent)
    except ValueError:  # the bundled model's package is not installed
        pass
    return [Path(os.path.realpath(d)) for d in dirs]


def is_path_like(model_name: str) -> bool:
    """A file name rather than a hub id (``org/name``), the bundled name or a fine-tuned id."""
    if model_name == BUNDLED_NAME or model_name.startswith(FINETUNED_PREFIX):
        return False
    if model_name.startswith(("/", "~", ".")) or model_name.endswith(".gguf"):
        return True
    # The engine loads any existing path, relative ones from the worker's directory.
    return ("/" in model_name and not HUB_ID_RE.fullmatch(model_name)) or Path(model_name).exists()


def local_path_problem(model_name: str) -> str | None:
    if not is_path_like(model_name):
        return None
    path = Path(model_name).expanduser()
    if not path.is_absolute():
        return "Give a local model file or directory as an absolute path."
    real = Path(os.path.realpath(path))
    if any(real == d or d in real.parents for d in local_model_dirs()):
        return None
    return (
        "Local model files must be inside a directory listed in the BFT_LOCAL_MODEL_DIRS setting, "
        "which the operator of this installation sets."
    )


def finetuned_problem(model_name: str, project: Project | None) -> str | None:
    """A fine-tuned id may be used only by the project whose fine-tune made it."""
    if not model_name.startswith(FINETUNED_PREFIX):
        return None
    from jobs.engine.model_store import finetuned_owner
    from jobs.models import FinetuneJob

    refused = f"No fine-tuned model {model_name!r} belongs to this project."
    if project is None or project.pk is None:
        return refused
    if not FinetuneJob.objects.filter(output_model_id=model_name, project=project).exists():
        return refused
    owner = finetuned_owner(model_name)
    if owner is not None and owner != project_owner_key(project):
        return refused
    return None


def project_owner_key(project: Project) -> str:
    """How the fine-tuned model registry names the project that owns an id."""
    return f"project-{project.pk}"


# --- the check -----------------------------------------------------------------------------


def model_problems(
    *,
    project: Project | None,
    kind: str,
    model_name: str,
    api_base: str = "",
    api_key_env: str = "",
) -> dict[str, str]:
    """Field name -> why the installation refuses it; empty when the model is allowed.

    ``project`` is the project that would use the model (None: one not created yet, which owns
    no fine-tuned model).
    """
    problems: dict[str, str] = {}
    model_name, api_base, api_key_env = model_name.strip(), api_base.strip(), api_key_env.strip()
    if kind == "local":
        problem = finetuned_problem(model_name, project) or local_path_problem(model_name)
        if problem:
            problems["model_name"] = problem
        return problems
    if problem := key_var_problem(api_key_env):
        problems["api_key_env"] = problem
    if problem := api_base_problem(api_base):
        problems["api_base"] = problem
    elif problem := provider_problem(model_name, api_base):
        problems["model_name"] = problem
    return problems


def check_model(model: LanguageModel) -> None:
    """The worker's last check before it uses ``model``: ModelPolicyError when refused."""
    problems = model_problems(
        project=model.project,
        kind=model.kind,
        model_name=model.model_name,
        api_base=model.api_base,
        api_key_env=model.api_key_env,
    )
    if problems:
        raise ModelPolicyError(f"Model {model.name!r} refused: " + " ".join(problems.values()))
