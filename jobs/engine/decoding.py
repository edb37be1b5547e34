"""Continuous batching for one local model: requests join the running batch and leave it when done.

DSPy's threads each send one request and wait. Generating them one at a time leaves the hardware
idle; batching them in one ``generate`` call makes every row wait for the longest one. This
decoder does neither: a request arriving while others decode is prefilled and merged into the
running batch at the next step, and a row that hits a stop string, EOS or its token budget is
answered at once and pruned from the batch (its KV cache rows are dropped).

Rows are left-padded into one KV cache; each row's attention mask and position ids keep padding
out of its attention, so a row decodes the same tokens alone or in a batch (greedy; numerics of a
different batch shape aside). Only this thread touches the model.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any


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
    future: Future[Generation] = field(default_factory=Future)
    generated: list[int] = field(default_factory=list)


_STOP: Any = object()  # queued by close(): stop after the rows in flight


class ContinuousBatcher:
    def __init__(
        self, model: Any, tokenizer: Any, device: str, *, max_batch: int, batch_window_s: float
    ) -> None:
        import torch

        self.torch = torch
        self.model = model
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
        self._rows: list[_Request] = []
        self._cache: Any = None
        self._mask: Any = None  # [rows, cached positions]: 1 for real tokens, 0 for padding
        self._logits: Any = None  # [rows, vocab]: each row's next-token logits
        self._thread = threading.Thread(target=self._serve, name="decoder", daemon=True)
        self._thread.start()

    def submit(
        self, prompt_ids: list[int], *, max_new_tokens: int, temperature: float, stop: Sequence[str]
    ) -> Future[Generation]:
        request = _Request(
            list(prompt_ids), max(1, int(max_new_tokens)), float(temperature), tuple(stop)
        )
        self._queue.put(request)
        return request.future

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
                    while self._rows:
                        self._step()
                    return
                self._admit(new)
                if self._rows:
                    self._step()
            except Exception as exc:  # a broken batch fails its callers; the thread keeps serving
                for row in self._rows:
                    if not row.future.done():
                        row.future.set_exception(exc)
                self._reset()

    def _take_new(self) -> list[Any]:
        room = self.max_batch - len(self._rows)
        if room <= 0:
            return []
        if not self._rows:  # idle: wait for work, then a short window for company
            new = [self._queue.get()]
            deadline = time.monotonic() + self.batch_window_s
            while len(new) < room and (remaining := deadline - time.monotonic()) > 0:
                try:
                    new.append(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
            return new
        new = []
        while len(new) < room:
            try:
                new.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return new

    def _admit(self, new: list[_Request]) -> None:
        """Prefill the new requests together and merge them into the running batch."""
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
        logits = self._forward(ids, mask, cache, positions=(mask.cumsum(-1) - 1).clamp(min=0))
        self.prefills += 1
        self.requests += len(new)
        if not self._rows:
            self._rows, self._cache, self._mask, self._logits = new, cache, mask, logits
            return
        self._cache, self._mask = _merge_caches(torch, self._cache, self._mask, cache, mask)
        self._rows = self._rows + new
        self._logits = torch.cat([self._logits, logits], dim=0)

    def _step(self) -> None:
        """Pick each row's next token, answer finished rows, and advance the rest by one token."""
        torch = self.torch
        tokens = self._pick(self._logits)
        keep = []
        for i, (row, token) in enumerate(zip(self._rows, tokens.tolist(), strict=True)):
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
        self._logits = self._forward(tokens[:, None], self._mask, self._cache, positions=positions)

    def _forward(self, ids: Any, mask: Any, cache: Any, *, positions: Any) -> Any:
        with self.torch.inference_mode():
            out = self.model(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=positions.to(self.device),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,  # the vocab projection only where the next token is read
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
        if text is None:
            text, _ = cut_at_stop(
                self.tokenizer.decode(row.generated, skip_special_tokens=True), row.stop
            )
        row.future.set_result(Generation(text, reason, len(row.prompt_ids), len(row.generated)))

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


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cuts = [text.find(s) for s in stop if s and s in text]
    if not cuts:
        return text, False
    return text[: min(cuts)], True
