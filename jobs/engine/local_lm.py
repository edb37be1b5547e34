"""Local transformers models as DSPy LMs, micro-batched, plus LiteLLM models by string.

How a local model plugs into DSPy 3.4: ``dspy.LM(model, engine=LocalEngine(...),
provider=LocalProvider())``. The engine implements ``complete(Request) -> Response``; the provider
implements ``finetune(...) -> new model id`` with our own LoRA loop. ``LocalLM`` subclasses
``dspy.LM`` only to swap the engine when DSPy copies the LM onto a new model id (which is what
``BootstrapFinetune`` does with a fine-tune's result): an engine never sees the model string.

One model is loaded once per process and served by one decoder thread that batches concurrent
requests continuously (``jobs/engine/decoding.py``). Through DSPy (``make_lm``: bootstraps,
evaluations) a fine-tuned id is served as base + merged LoRA adapter, a copy of the base per
student. The model server (``manage.py serve``) instead serves every student of a base from one
copy, with per-row adapters in the same batch: :class:`SharedBaseModel` and
:func:`served_model` (``jobs/engine/adapters.py``). Neither switches adapters globally (peft's
``set_adapter`` is global state, unsafe across threads).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import dspy
from dspy.clients.provider import Provider, TrainingJob

from jobs.engine import model_store
from jobs.engine.adapters import AdapterPool, AdapterRef, max_loaded_from_env
from jobs.engine.decoding import ContinuousBatcher, Generation
from jobs.engine.types import FinetuneConfig, ModelSpec

COMPLETED_MARKER = "[[ ## completed ## ]]"  # ChatAdapter's end of answer: stop there
DEFAULT_BATCH_WINDOW_S = 0.02
DEFAULT_MAX_BATCH = 16


class LoadedModel:
    """A model + tokenizer on a device, served by one continuous-batching decoder thread."""

    def __init__(self, name: str, *, batch_window_s: float, max_batch: int) -> None:
        self.name = name
        resolved = model_store.resolve(name)
        self.device = model_store.pick_device()
        self.tokenizer = model_store.load_tokenizer(resolved)
        model = model_store.load_base_model(
            resolved, device=self.device, dtype=_inference_dtype(self.device)
        )
        if resolved.adapter_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(resolved.adapter_dir)).merge_and_unload()
        model.eval()
        self.model = model
        self.decoder = ContinuousBatcher(
            model, self.tokenizer, self.device, max_batch=max_batch, batch_window_s=batch_window_s
        )

    def chat_prompt_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return chat_prompt_ids(self.tokenizer, messages)

    def generate(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_new_tokens: int,
        temperature: float,
        stop: Sequence[str],
    ) -> Generation:
        """One chat completion; concurrent callers share the decoder's batch."""
        future = self.decoder.submit(
            self.chat_prompt_ids(messages),
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            stop=stop,
        )
        return future.result()


def chat_prompt_ids(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    """The prompt's token ids: the model's chat template, ending with the assistant's turn."""
    ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


class SharedBaseModel:
    """One copy of a base model serving the base and any of its fine-tuned students at once.

    Each request names its adapter (``None``: the base); rows of different students share one
    continuous batch (``jobs/engine/adapters.py``). Used by the model server.
    """

    def __init__(
        self, base_name: str, *, batch_window_s: float, max_batch: int, max_adapters: int
    ) -> None:
        resolved = model_store.resolve(base_name)
        if resolved.adapter_dir is not None:
            raise ValueError(f"{base_name!r} is a fine-tuned id, not a base model")
        self.name = base_name
        self.device = model_store.pick_device()
        self.tokenizer = model_store.load_tokenizer(resolved)
        model = model_store.load_base_model(
            resolved, device=self.device, dtype=_inference_dtype(self.device)
        )
        model.eval()
        self.model = model
        self.adapters = AdapterPool(model, max_loaded=max_adapters)
        self.decoder = ContinuousBatcher(
            model,
            self.tokenizer,
            self.device,
            max_batch=max_batch,
            batch_window_s=batch_window_s,
            adapters=self.adapters,
        )

    def submit(
        self,
        messages: Sequence[dict[str, str]],
        *,
        adapter: AdapterRef | None,
        max_new_tokens: int,
        temperature: float,
        stop: Sequence[str],
        on_text: Callable[[str], None] | None = None,
    ) -> Future[Generation]:
        """Queue one chat completion; its Future is answered by the decoder thread."""
        return self.decoder.submit(
            chat_prompt_ids(self.tokenizer, messages),
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            stop=stop,
            adapter=adapter,
            on_text=on_text,
        )

    def generate(
        self,
        messages: Sequence[dict[str, str]],
        *,
        adapter: AdapterRef | None,
        max_new_tokens: int,
        temperature: float,
        stop: Sequence[str],
    ) -> Generation:
        return self.submit(
            messages,
            adapter=adapter,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            stop=stop,
        ).result()


_shared: dict[tuple[str, float, int, int], SharedBaseModel] = {}


def get_shared_base(
    base_name: str,
    *,
    batch_window_s: float = DEFAULT_BATCH_WINDOW_S,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_adapters: int | None = None,
) -> SharedBaseModel:
    """The process-wide shared copy of a base model (loaded on first use)."""
    adapters = max_adapters if max_adapters is not None else max_loaded_from_env()
    key = (base_name, batch_window_s, max_batch, adapters)
    with _loaded_lock:
        model = _shared.get(key)
        if model is None:
            model = _shared[key] = SharedBaseModel(
                base_name, batch_window_s=batch_window_s, max_batch=max_batch, max_adapters=adapters
            )
        return model


def served_model(
    name: str,
    *,
    batch_window_s: float = DEFAULT_BATCH_WINDOW_S,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_adapters: int | None = None,
) -> tuple[SharedBaseModel, AdapterRef | None]:
    """Where a local model name is served: its base's shared copy, and its adapter (None for a
    base model). Raises model_store.UnknownModelError for a name that resolves to nothing."""
    resolved = model_store.resolve(name)
    base = get_shared_base(
        resolved.base_name if resolved.adapter_dir is not None else name,
        batch_window_s=batch_window_s,
        max_batch=max_batch,
        max_adapters=max_adapters,
    )
    if resolved.adapter_dir is None:
        return base, None
    return base, AdapterRef(name, resolved.adapter_dir)


def _inference_dtype(device: str) -> Any:
    """BFT_INFERENCE_DTYPE, else bfloat16 on CUDA, and on CPU only where bf16 is native and
    faster (jobs.engine.precision; BFT_CPU_BF16 forces it), else float32."""
    import torch

    from jobs.engine.precision import choose_precision

    choice = os.getenv("BFT_INFERENCE_DTYPE")
    if not choice:
        native_bf16 = device == "cpu" and choose_precision("cpu", True).bf16
        choice = "bfloat16" if device == "cuda" or native_bf16 else "float32"
    if choice not in ("bfloat16", "float16", "float32"):
        raise ValueError(
            f"BFT_INFERENCE_DTYPE must be bfloat16, float16 or float32, not {choice!r}"
        )
    return getattr(torch, choice)


_loaded: dict[tuple[str, float, int], LoadedModel] = {}
_loaded_lock = threading.Lock()


def get_loaded_model(
    name: str, *, batch_window_s: float = DEFAULT_BATCH_WINDOW_S, max_batch: int = DEFAULT_MAX_BATCH
) -> LoadedModel:
    """The process-wide instance for a local model name and batching policy (loaded on first use)."""
    key = (name, batch_window_s, max_batch)
    with _loaded_lock:
        model = _loaded.get(key)
        if model is None:
            model = _loaded[key] = LoadedModel(
                name, batch_window_s=batch_window_s, max_batch=max_batch
            )
        return model


@atexit.register
def _close_decoders() -> None:
    """Stop every decoder thread before Python finalizes (see ContinuousBatcher.close)."""
    with _loaded_lock:
        decoders = [m.decoder for m in _loaded.values()] + [m.decoder for m in _shared.values()]
    for decoder in decoders:
        decoder.close()


class LocalEngine:
    """DSPy engine for a local model: ``complete(Request) -> Response``.

    The interface is the one ``dspy.clients.engines.base`` defines for DSPy's own engines.
    """

    def __init__(
        self,
        model_name: str,
        *,
        batch_window_s: float = DEFAULT_BATCH_WINDOW_S,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self.model_name = model_name
        self.batch_window_s = batch_window_s
        self.max_batch = max_batch

    @property
    def loaded(self) -> LoadedModel:
        return get_loaded_model(
            self.model_name, batch_window_s=self.batch_window_s, max_batch=self.max_batch
        )

    def complete(self, request: Any) -> Any:
        from dspy.clients.engines.base import validate_request
        from dspy.lm15 import Message, Response, TextPart, Usage

        validate_request(request)
        messages = request_to_chat(request)
        config = request.config
        stop = tuple(config.stop or ()) or (COMPLETED_MARKER,)
        result = self.loaded.generate(
            messages,
            max_new_tokens=config.max_tokens or 256,
            temperature=config.temperature or 0.0,
            stop=stop,
        )
        return Response(
            id=None,
            model=self.model_name,
            message=Message.assistant([TextPart(result.text)]),
            finish_reason=result.finish_reason,
            usage=Usage(input_tokens=result.input_tokens, output_tokens=result.output_tokens),
        )

    def stream(self, request: Any) -> Any:
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        """The loaded model is shared by every engine of this process; nothing to release here."""

    def dump_state(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "batch_window_s": self.batch_window_s,
            "max_batch": self.max_batch,
        }

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> LocalEngine:
        return cls(
            state["model_name"],
            batch_window_s=state.get("batch_window_s", DEFAULT_BATCH_WINDOW_S),
            max_batch=state.get("max_batch", DEFAULT_MAX_BATCH),
        )


def request_to_chat(request: Any) -> list[dict[str, str]]:
    """A canonical DSPy request as chat-template messages (system first, developer as system)."""
    messages: list[dict[str, str]] = []
    if request.system is not None:
        system = (
            request.system
            if isinstance(request.system, str)
            else "".join(p.text for p in request.system)
        )
        messages.append({"role": "system", "content": system})
    for message in request.messages:
        role = {"developer": "system"}.get(message.role, message.role)
        if role not in ("system", "user", "assistant"):
            raise ValueError(
                f"local models take system, user and assistant messages, not {message.role!r}"
            )
        messages.append({"role": role, "content": message.text or ""})
    return messages


class LocalTrainingJob(TrainingJob):
    def status(self) -> str:
        return "done" if self.done() else "running"


class LocalProvider(Provider):
    """Lets the unchanged ``dspy.BootstrapFinetune`` fine-tune a local model with our LoRA loop."""

    TrainingJob = LocalTrainingJob

    def __init__(self) -> None:
        super().__init__()
        self.finetunable = True

    @staticmethod
    def is_provider_model(model: str) -> bool:
        return False

    @staticmethod
    def finetune(
        job: Any,
        model: str,
        train_data: list[dict[str, Any]],
        train_data_format: Any,
        train_kwargs: dict[str, Any] | None = None,
    ) -> str:
        """Train a LoRA adapter on ``train_data`` (chat rows); return the new model id.

        ``train_kwargs`` are FinetuneConfig fields, plus optional ``output_dir`` and ``job_name``.
        """
        from jobs.engine.finetune import finetune

        kwargs = dict(train_kwargs or {})
        job_name = str(kwargs.pop("job_name", f"dspy-{int(time.time())}"))
        output_dir = Path(kwargs.pop("output_dir", model_store.artifacts_dir() / "dspy" / job_name))
        config = FinetuneConfig.from_dict({"base_model": model, **kwargs})
        model_id = model_store.finetuned_model_id(model, job_name)
        result = finetune(config, train_data, output_dir=output_dir, model_id=model_id)
        if result.stopped_early or not result.model_id:
            raise RuntimeError(f"fine-tune of {model} stopped before it finished")
        return result.model_id


class LocalLM(dspy.LM):
    """``dspy.LM`` whose copies onto another model id get that model's engine.

    A loaded program gets its provider back too (DSPy saves the engine, not the provider).
    """

    def __init__(self, model: str, *, provider: Provider | None = None, **kwargs: Any) -> None:
        super().__init__(model, provider=provider or LocalProvider(), **kwargs)

    def copy(self, **kwargs: Any) -> LocalLM:
        engine = self._engine_spec
        if "model" in kwargs and "engine" not in kwargs and isinstance(engine, LocalEngine):
            kwargs["engine"] = LocalEngine(
                kwargs["model"], batch_window_s=engine.batch_window_s, max_batch=engine.max_batch
            )
        copied: LocalLM = super().copy(**kwargs)
        return copied


def make_lm(
    spec: ModelSpec,
    *,
    cache: bool = False,
    batch_window_s: float = DEFAULT_BATCH_WINDOW_S,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> dspy.LM:
    """A DSPy LM for a model spec. Local models load lazily, on the first request.

    ``max_batch=1`` serves one request at a time (the baseline micro-batching is measured against).
    """
    if spec.kind == "local":
        return LocalLM(
            spec.name,
            engine=LocalEngine(spec.name, batch_window_s=batch_window_s, max_batch=max_batch),
            provider=LocalProvider(),
            temperature=spec.temperature,
            max_tokens=spec.max_tokens,
            cache=cache,
            num_retries=0,
        )
    if spec.kind == "litellm":
        kwargs: dict[str, Any] = {}
        if spec.api_key_env:
            key = os.environ.get(spec.api_key_env)
            if not key:
                raise ValueError(
                    f"environment variable {spec.api_key_env} (the API key of {spec.name}) is not set on this worker"
                )
            kwargs["api_key"] = key
        if spec.api_base:
            kwargs["api_base"] = spec.api_base
        return dspy.LM(
            spec.name,
            temperature=spec.temperature,
            max_tokens=spec.max_tokens,
            cache=cache,
            **kwargs,
        )
    raise ValueError(f"unknown model kind {spec.kind!r}: expected 'local' or 'litellm'")


def check_model(spec: ModelSpec) -> None:
    """Fail fast with a clear message when a model cannot be used (unknown local name, missing key)."""
    if spec.kind == "local":
        model_store.resolve(spec.name)
    else:
        make_lm(spec)


def try_model(spec: ModelSpec, prompt: str) -> str:
    """One short completion through DSPy's LM path: the Models page's "test" button."""
    check_model(spec)
    lm = make_lm(spec)
    outputs = lm(prompt)
    first = outputs[0]
    return first["text"] if isinstance(first, dict) else str(first)
