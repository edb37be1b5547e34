"""The engine behind the server: requests go to their base model's shared continuous batch.

Every local model of a base (the base itself and each fine-tuned student, a LoRA adapter) is
served from one copy of that base (``jobs.engine.local_lm.served_model``). ``submit`` returns the
decoder's ``concurrent.futures.Future`` at once; the app awaits it without blocking the event
loop. The engine (torch, transformers, peft, DSPy) is imported on first use, not when this module
is imported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from jobs.engine.decoding import Generation

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 32
DEFAULT_BATCH_WINDOW_S = 0.01


class ModelUnavailable(RuntimeError):
    """A listed model that this server cannot load (the log has the details)."""


class Backend(Protocol):
    def submit(
        self,
        model_name: str,
        messages: Sequence[dict[str, str]],
        *,
        max_new_tokens: int,
        temperature: float,
        stop: Sequence[str],
        on_text: Callable[[str], None] | None = None,
    ) -> Future[Generation]: ...


@dataclass
class EngineBackend:
    """Local models on this host's device, batched continuously per base model."""

    max_batch: int = DEFAULT_MAX_BATCH
    batch_window_s: float = DEFAULT_BATCH_WINDOW_S
    max_adapters: int | None = None  # None: BFT_SERVE_MAX_ADAPTERS

    def submit(
        self,
        model_name: str,
        messages: Sequence[dict[str, str]],
        *,
        max_new_tokens: int,
        temperature: float,
        stop: Sequence[str],
        on_text: Callable[[str], None] | None = None,
    ) -> Future[Generation]:
        """Blocking only while the base model loads (its first request): call it in a thread."""
        from jobs.engine.local_lm import served_model
        from jobs.engine.model_store import UnknownModelError

        try:
            base, adapter = served_model(
                model_name,
                batch_window_s=self.batch_window_s,
                max_batch=self.max_batch,
                max_adapters=self.max_adapters,
            )
        except (UnknownModelError, OSError) as exc:
            logger.warning("cannot load model %s: %s", model_name, exc)
            raise ModelUnavailable(model_name) from exc
        return base.submit(
            messages,
            adapter=adapter,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            stop=stop,
            on_text=on_text,
        )

    def preload(self, model_name: str) -> None:
        """Load a model's base (and its adapter) now rather than on its first request."""
        self.submit(
            model_name,
            [{"role": "user", "content": "hi"}],
            max_new_tokens=1,
            temperature=0.0,
            stop=(),
        ).result()
