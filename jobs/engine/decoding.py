"""Continuous batching for one local model: requests join the running batch and leave it when done.

DSPy's threads each send one request and wait. Generating them one at a time leaves the hardware
idle; batching them in one ``generate`` call makes every row wait for the longest one. This
decoder does neither: a request arriving while others decode is prefilled and merged into the
running batch at the next step, and a row that hits a stop string, EOS or its token budget is
answered at once and pruned from the batch (its KV cache rows are dropped).

Rows are left-padded into one KV cache; each row's attention mask and position ids keep padding
out of its attention, so a row decodes the same tokens alone or in a batch (greedy; numerics of a
different batch shape aside). Only this thread touches the model.

With an :class:`~jobs.engine.adapters.AdapterPool`, one base model serves many LoRA students at
once: each request names its adapter (or none: the base), the pool loads it on this thread
between steps, and every forward pass gets one adapter name per row (peft's mixed-adapter
batches). A request whose adapter cannot be loaded yet (the pool is full of adapters with rows in
flight) waits for a row to finish. A request whose Future is cancelled leaves the batch at the
next step; ``on_text`` receives each row's new text as it decodes (streaming).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobs.engine.adapters import AdapterPool, AdapterRef


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str  # "stop" | "length"
    input_tokens: int
    output_tokens: int


@dataclass
class _Request:
    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float
    stop: tuple[str, ...]
    adapter: AdapterRef | None = None  # None: the base model
    on_text: Callable[[str], None] | None = None  # streaming: called with each new piece of text
    future: Future[Generation] = field(default_factory=Future)
    generated: list[int] = field(default_factory=list)
    adapter_name: str = ""  # the adapter's name in the model, set when the row is admitted
    streamed: int = 0  # characters of text already given to on_text


_STOP: Any = object()  # queued by close(): stop after the rows in flight


class ContinuousBatcher:
    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        device: str,
        *,
        max_batch: int,
        batch_window_s: float,
        adapters: AdapterPool | None = None,
    ) -> None:
        import torch

        self.torch = torch
        self.model = model
        self.adapters = adapters
        self.tokenizer = tokenizer
        self.device = device
        self.max_batch = max(1, max_batch)
        self.batch_window_s = batch_window_s
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        )
        self.forward_calls = 0  # model forward passes (prefills + decode steps)
        self.prefills = 0  # prefill passes: requests that arrived together share one
        self.requests = 0
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._waiting: deque[_Request] = deque()  # taken, but their adapter has no room yet
        self._rows: list[_Request] = []
        self._cache: Any = None
        self._mask: Any = None  # [rows, cached positions]: 1 for real tokens, 0 for padding
        self._logits: Any = None  # [rows, vocab]: each row's next-token logits
        self._thread = threading.Thread(target=self._serve, name="decoder", daemon=True)
        self._thread.start()

    def submit(
        self,
        prompt_ids: list[int],
        *,
        max_new_tokens: int,
        temperature: float,
        stop: Sequence[str],
        adapter: AdapterRef | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Future[Generation]:
        """Queue one generation. ``adapter``: a LoRA adapter of this base (needs an adapter pool).
        Cancelling the returned Future drops the row from the batch at the next step."""
        if adapter is not None and self.adapters is None:
            raise ValueError("this decoder serves its model without adapters")
        request = _Request(
            list(prompt_ids),
            max(1, int(max_new_tokens)),
            float(temperature),
            tuple(stop),
            adapter=adapter,
            on_text=on_text,
        )
        self._queue.put(request)
        return request.future

    @property
    def in_flight(self) -> int:
        """Rows decoding now (read from another thread: a snapshot)."""
        return len(self._rows)

    def close(self, timeout_s: float = 30.0) -> None:
        """Finish what is in flight, then stop the thread (idempotent).

        Called at interpreter exit: a daemon thread still inside torch when Python finalizes is
        torn down mid C++ call, and the process aborts ("terminate called without an active
        exception") after the program's work is done.
        """
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout_s)

    def _serve(self) -> None:
        while True:
            try:
                new = self._take_new()
                if _STOP in new:
                    new.remove(_STOP)
                    self._admit(new)
                    while self._rows or self._waiting:
                        self._admit(self._take_waiting(self.max_batch - len(self._rows)))
                        if self._rows:
                            self._step()
                    return
                self._admit(new)
                if self._rows:
                    self._step()
            except Exception as exc:  # a broken batch fails its callers; the thread keeps serving
                for row in self._rows:
                    if not row.future.done():
                        row.future.set_exception(exc)
                    self._release(row)
                self._reset()

    def _take_new(self) -> list[Any]:
        room = self.max_batch - len(self._rows)
        if room <= 0:
            return []
        if self._waiting:  # requests held back for their adapter come first, in order
            return self._take_queued(self._take_waiting(room), room)
        if not self._rows:  # idle: wait for work, then a short window for company
            new = [self._queue.get()]
            deadline = time.monotonic() + self.batch_window_s
            while len(new) < room and (remaining := deadline - time.monotonic()) > 0:
                try:
                    new.append(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
            return new
        return self._take_queued([], room)

    def _take_queued(self, new: list[Any], room: int) -> list[Any]:
        """``new`` topped up from the queue, without waiting, to at most ``room`` requests."""
        while len(new) < room:
            try:
                new.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return new

    def _take_waiting(self, room: int) -> list[_Request]:
        taken: list[_Request] = []
        while self._waiting and len(taken) < room:
            taken.append(self._waiting.popleft())
        return taken

    def _admit(self, new: list[_Request]) -> None:
        """Prefill the new requests together and merge them into the running batch."""
        new = self._ready(new)
        if not new:
            return
        torch = self.torch
        width = max(len(r.prompt_ids) for r in new)
        ids = torch.full((len(new), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(new), width), dtype=torch.long)
        for i, request in enumerate(new):
            n = len(request.prompt_ids)
            ids[i, width - n :] = torch.tensor(request.prompt_ids)
            mask[i, width - n :] = 1
        from transformers import DynamicCache

        cache = DynamicCache()
        try:
            logits = self._forward(
                ids, mask, cache, positions=(mask.cumsum(-1) - 1).clamp(min=0), rows=new
            )
        except Exception as exc:  # the new rows fail; the batch in flight is untouched
            for request in new:
                if not request.future.done():
                    request.future.set_exception(exc)
                self._release(request)
            return
        self.prefills += 1
        self.requests += len(new)
        if not self._rows:
            self._rows, self._cache, self._mask, self._logits = new, cache, mask, logits
            return
        self._cache, self._mask = _merge_caches(torch, self._cache, self._mask, cache, mask)
        self._rows = self._rows + new
        self._logits = torch.cat([self._logits, logits], dim=0)

    def _ready(self, new: list[_Request]) -> list[_Request]:
        """The new requests that can join now: cancelled ones are dropped, a request whose
        adapter fails to load is answered with the error, and one whose adapter has no room
        waits (in order) until a row in flight finishes."""
        ready = []
        for index, request in enumerate(new):
            if request.future.cancelled():
                continue
            if self.adapters is None:
                ready.append(request)
                continue
            try:
                name = self.adapters.acquire(request.adapter)
            except Exception as exc:  # a broken or missing adapter fails its own request only
                request.future.set_exception(exc)
                continue
            if name is None:  # every loaded adapter is in use and the pool is full
                self._waiting.extendleft(reversed(new[index:]))
                break
            request.adapter_name = name
            ready.append(request)
        return ready

    def _step(self) -> None:
        """Pick each row's next token, answer finished rows, and advance the rest by one token."""
        torch = self.torch
        tokens = self._pick(self._logits)
        keep = []
        for i, (row, token) in enumerate(zip(self._rows, tokens.tolist(), strict=True)):
            if row.future.cancelled():  # the caller went away: drop the row
                self._release(row)
                continue
            if token in self.eos_ids:
                self._finish(row, "stop")
                continue
            row.generated.append(token)
            text, stopped = cut_at_stop(
                self.tokenizer.decode(row.generated, skip_special_tokens=True), row.stop
            )
            if stopped:
                self._finish(row, "stop", text)
            elif len(row.generated) >= row.max_new_tokens:
                self._finish(row, "length", text)
            else:
                if row.on_text is not None:
                    self._stream(row, text)
                keep.append(i)
        if not keep:
            self._reset()
            return
        if len(keep) < len(self._rows):
            index = torch.tensor(keep, dtype=torch.long)
            self._cache.batch_select_indices(index.to(self.device))
            self._mask = self._mask[index]
            tokens = tokens[index]
            self._rows = [self._rows[i] for i in keep]
        self._mask = torch.cat([self._mask, torch.ones((len(keep), 1), dtype=torch.long)], dim=1)
        positions = self._mask.sum(-1, keepdim=True) - 1
        self._logits = self._forward(
            tokens[:, None], self._mask, self._cache, positions=positions, rows=self._rows
        )

    def _forward(
        self, ids: Any, mask: Any, cache: Any, *, positions: Any, rows: list[_Request]
    ) -> Any:
        model, extra = self.model, {}
        if self.adapters is not None and self.adapters.peft_model is not None:
            # One adapter per row ("__base__": none), applied by peft's LoRA layers to each
            # row's slice of the batch, in the prefill and in every decode step alike.
            model = self.adapters.peft_model
            extra["adapter_names"] = [row.adapter_name for row in rows]
        with self.torch.inference_mode():
            out = model(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=positions.to(self.device),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,  # the vocab projection only where the next token is read
                **extra,
            )
        self.forward_calls += 1
        return out.logits[:, -1, :].float().cpu()

    def _pick(self, logits: Any) -> Any:
        torch = self.torch
        tokens = logits.argmax(dim=-1)
        for i, row in enumerate(self._rows):
            if row.temperature > 0:
                probs = torch.softmax(logits[i] / row.temperature, dim=-1)
                tokens[i] = torch.multinomial(probs, 1)[0]
        return tokens

    def _finish(self, row: _Request, reason: str, text: str | None = None) -> None:
        self._release(row)
        if row.future.done():  # cancelled by its caller meanwhile
            return
        if text is None:
            text, _ = cut_at_stop(
                self.tokenizer.decode(row.generated, skip_special_tokens=True), row.stop
            )
        row.future.set_result(Generation(text, reason, len(row.prompt_ids), len(row.generated)))

    def _stream(self, row: _Request, text: str) -> None:
        """Give ``on_text`` the new text that can no longer change: not a trailing piece that may
        start a stop string, nor a half-decoded character."""
        safe = len(text) - _held_back(text, row.stop)
        if safe <= row.streamed:
            return
        piece, row.streamed = text[row.streamed : safe], safe
        listener = row.on_text
        try:
            if listener is not None:
                listener(piece)
        except Exception:  # a broken listener must not break the batch: stop streaming to it
            row.on_text = None

    def _release(self, row: _Request) -> None:
        if self.adapters is not None and row.adapter_name:
            self.adapters.release(row.adapter_name)
            row.adapter_name = ""

    def _reset(self) -> None:
        self._rows, self._cache, self._mask, self._logits = [], None, None, None


def _merge_caches(
    torch: Any, cache_a: Any, mask_a: Any, cache_b: Any, mask_b: Any
) -> tuple[Any, Any]:
    """Stack two left-padded KV caches along the batch, left-padding the shorter in time."""
    width = max(mask_a.shape[1], mask_b.shape[1])

    def pad_mask(mask: Any) -> Any:
        return torch.nn.functional.pad(mask, (width - mask.shape[1], 0))

    def pad_time(tensor: Any) -> Any:  # [batch, heads, time, dim]: pad time on the left
        return torch.nn.functional.pad(tensor, (0, 0, width - tensor.shape[-2], 0))

    for layer_a, layer_b in zip(cache_a.layers, cache_b.layers, strict=True):
        layer_a.keys = torch.cat([pad_time(layer_a.keys), pad_time(layer_b.keys)], dim=0)
        layer_a.values = torch.cat([pad_time(layer_a.values), pad_time(layer_b.values)], dim=0)
    return cache_a, torch.cat([pad_mask(mask_a), pad_mask(mask_b)], dim=0)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    return {i for i in ids if i is not None}


def _held_back(text: str, stop: Sequence[str]) -> int:
    """How many trailing characters of ``text`` to hold back while streaming: the longest
    suffix that begins a stop string, and a trailing replacement character (a multi-byte
    character whose remaining tokens have not been decoded yet)."""
    held = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), held, -1):
            if s.startswith(text[-n:]):
                held = n
                break
    if text.endswith("\ufffd"):
        held = max(held, len(text) - len(text.rstrip("\ufffd")))
    return held


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cuts = [text.find(s) for s in stop if s and s in text]
    if not cuts:
        return text, False
    return text[: min(cuts)], True
