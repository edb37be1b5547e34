"""Many LoRA students of one base model, served from one copy of the base.

A fine-tuned id (``bftweb:<base>:ft-<job>``) is a LoRA adapter on its base. Merging each into a
copy of the base costs one base's memory per student; here the base is loaded once and wrapped in
one ``peft.PeftModel`` that holds any number of adapters side by side. Each request names its
adapter; the decoder (``jobs/engine/decoding.py``) passes one adapter name per row of the batch in
every forward pass (``adapter_names=[...]``, peft's mixed-adapter batches: each LoRA layer adds
each adapter's delta to its own rows only, and ``"__base__"`` rows get none), so students and the
base share one continuous batch. Nothing global is switched (``set_adapter`` is never called).

The pool holds at most ``max_loaded`` adapters (``BFT_SERVE_MAX_ADAPTERS``, default 8). Loading one
more unloads the least recently used adapter that has no row in flight; when every loaded
adapter has rows in flight the request waits for one to finish. The pool is used only from the
decoder thread (loading an adapter changes the model's modules, so it happens between steps).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.engine.output_files import ADAPTER_CONFIG

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in adapter_names
DEFAULT_MAX_LOADED = 8


def max_loaded_from_env() -> int:
    """``BFT_SERVE_MAX_ADAPTERS`` (default 8): how many adapters one base keeps loaded."""
    value = os.getenv("BFT_SERVE_MAX_ADAPTERS", str(DEFAULT_MAX_LOADED))
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"BFT_SERVE_MAX_ADAPTERS must be a whole number >= 1, not {value!r}")
    return number


@dataclass(frozen=True)
class AdapterRef:
    """A request's adapter: the fine-tuned model id it serves and the adapter directory."""

    key: str  # the fine-tuned model id
    path: Path


@dataclass
class _Slot:
    name: str  # the adapter's name inside the PeftModel (model ids hold characters peft refuses)
    in_flight: int = 0


class AdapterPool:
    """The adapters loaded on one base model: acquired per row, unloaded least recently used."""

    def __init__(self, base_model: Any, *, max_loaded: int) -> None:
        if max_loaded < 1:
            raise ValueError("an adapter pool holds at least one adapter")
        self.base_model = base_model
        self.max_loaded = max_loaded
        self._peft: Any = None  # the PeftModel around base_model, from the first load on
        self._slots: OrderedDict[AdapterRef, _Slot] = OrderedDict()  # least recently used first
        self._counter = 0
        self.loads = 0
        self.unloads = 0

    @property
    def peft_model(self) -> Any:
        """The model to run with ``adapter_names``; None while no adapter is loaded (then the base
        model runs as it is: its LoRA layers, if any were injected, hold no adapter)."""
        return self._peft if self._slots else None

    @property
    def loaded(self) -> list[str]:
        """The model ids loaded now, least recently used first."""
        return [ref.key for ref in self._slots]

    def in_flight(self, key: str) -> int:
        """Rows in flight on the model id ``key``'s adapter."""
        return sum(slot.in_flight for ref, slot in self._slots.items() if ref.key == key)

    def acquire(self, ref: AdapterRef | None) -> str | None:
        """The adapter name a new row passes to the model (loading the adapter if needed), or
        None when the pool is full and every loaded adapter has rows in flight (wait)."""
        if ref is None:
            return BASE_ADAPTER
        slot = self._slots.get(ref)  # by id and directory: a re-registered id loads anew
        if slot is None:
            if not (ref.path / ADAPTER_CONFIG).is_file():
                raise FileNotFoundError(f"the adapter of {ref.key} is missing")
            victim = self._idle_victim() if len(self._slots) >= self.max_loaded else None
            if len(self._slots) >= self.max_loaded and victim is None:
                return None
            # Load first, then unload: the PeftModel always keeps an adapter it can call active
            # (its forward reads the active adapter's config, whatever adapter_names says).
            slot = self._load(ref)
            if victim is not None:
                self._unload(victim)
        self._slots.move_to_end(ref)
        slot.in_flight += 1
        return slot.name

    def release(self, name: str) -> None:
        """A row that used adapter ``name`` left the batch."""
        if name == BASE_ADAPTER:
            return
        for slot in self._slots.values():
            if slot.name == name:
                slot.in_flight = max(0, slot.in_flight - 1)
                return

    def _idle_victim(self) -> AdapterRef | None:
        """The least recently used adapter with no row in flight."""
        return next((ref for ref, slot in self._slots.items() if slot.in_flight == 0), None)

    def _load(self, ref: AdapterRef) -> _Slot:
        from peft import PeftModel

        self._counter += 1
        name = f"lora{self._counter}"
        if self._peft is None:
            self._peft = PeftModel.from_pretrained(
                self.base_model, str(ref.path), adapter_name=name, is_trainable=False
            )
            self._peft.eval()
        else:
            self._peft.load_adapter(str(ref.path), adapter_name=name, is_trainable=False)
        slot = self._slots[ref] = _Slot(name)
        self.loads += 1
        return slot

    def _unload(self, ref: AdapterRef) -> None:
        """Delete an idle adapter's weights (its LoRA matrices leave every layer)."""
        slot = self._slots.pop(ref)
        assert slot.in_flight == 0  # never unload an adapter with rows in flight
        self._peft.delete_adapter(slot.name)
        self.unloads += 1
