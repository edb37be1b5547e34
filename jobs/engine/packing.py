"""Tokenization and padding-free packing of chat rows for LoRA training (see jobs/engine/finetune.py).

Only the last assistant message of a row is trained on: its labels are the answer's tokens and
IGNORE_INDEX on the prompt (masked by position, never by the pad id). A micro-batch is packed into
one row whose ``position_ids`` restart for every sequence, and :data:`PACKED_ATTENTION` runs causal
SDPA on each sequence's slice, so attention does no cross-sequence work.

Heavy imports (torch, transformers) happen inside the functions that need them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant")
# The attention implementation used for training (see the module docstring).
PACKED_ATTENTION = "bftweb_packed_sdpa"


@dataclass(frozen=True)
class Example:
    """One tokenized row: the full conversation and its labels (IGNORE_INDEX on the prompt)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def n_label_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass(frozen=True)
class TokenizedData:
    examples: list[Example]
    truncated_rows: int  # rows cut to max_seq_length that kept some answer tokens
    dropped_rows: int  # rows with no answer token left after truncation (not trained on)

    @property
    def n_tokens(self) -> int:
        return sum(len(example.input_ids) for example in self.examples)


def _template_ids(
    tokenizer: Any, messages: list[dict[str, str]], *, add_generation_prompt: bool
) -> list[int]:
    encoded = tokenizer.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=True
    )
    return list(encoded["input_ids"])


def tokenize_row(
    tokenizer: Any, row: dict[str, Any], *, index: int, max_seq_length: int
) -> tuple[Example | None, bool]:
    """Tokenize one row with the chat template; labels are IGNORE_INDEX on the prompt part.

    Returns (example, truncated); example is None when truncation left no answer token.
    """
    messages = row["messages"]
    prompt = _template_ids(tokenizer, messages[:-1], add_generation_prompt=True)
    full = _template_ids(tokenizer, messages, add_generation_prompt=False)
    if full[: len(prompt)] != prompt or len(full) <= len(prompt):
        raise ValueError(
            f"row {index}: the chat template's prompt tokens are not a prefix of the full conversation's "
            "tokens, so the answer cannot be located (is this model's chat template unusual?)"
        )
    truncated = len(full) > max_seq_length
    full = full[:max_seq_length]
    if len(full) <= len(prompt):
        return None, truncated
    labels = [IGNORE_INDEX] * len(prompt) + full[len(prompt) :]
    return Example(input_ids=full, labels=labels), truncated


def tokenize_rows(
    tokenizer: Any, rows: list[dict[str, Any]], *, max_seq_length: int
) -> TokenizedData:
    examples: list[Example] = []
    truncated_rows = dropped_rows = 0
    for index, row in enumerate(rows):
        example, truncated = tokenize_row(
            tokenizer, row, index=index, max_seq_length=max_seq_length
        )
        if example is None:
            dropped_rows += 1
            continue
        truncated_rows += truncated
        examples.append(example)
    if not examples:
        raise ValueError(
            f"all {len(rows)} rows lost their answer to truncation: raise max_seq_length "
            f"(now {max_seq_length}) or shorten the prompts"
        )
    return TokenizedData(examples, truncated_rows, dropped_rows)


def pack(examples: list[Example]) -> dict[str, Any]:
    """Concatenate examples into one row with restarting position ids (no padding).

    ``targets[t]`` is the label of token t+1 within the same sequence (the shift happens here,
    per sequence, so no position predicts the first token of the next sequence); ``keep`` marks
    the positions that have a target, where logits are computed.
    """
    import torch

    input_ids: list[int] = []
    position_ids: list[int] = []
    targets: list[int] = []
    for example in examples:
        input_ids += example.input_ids
        position_ids += range(len(example.input_ids))
        targets += example.labels[1:] + [IGNORE_INDEX]
    targets_tensor = torch.tensor(targets)
    keep = targets_tensor != IGNORE_INDEX
    return {
        "input_ids": torch.tensor([input_ids]),
        "position_ids": torch.tensor([position_ids]),
        "keep": keep.unsqueeze(0),
        "targets": targets_tensor[keep],
    }


def _packed_sdpa_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    *,
    packed_seq_lens: tuple[int, ...] | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Causal SDPA on each sequence of a packed row (batch 1); no cross-sequence scores computed."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if packed_seq_lens is None or query.shape[0] != 1:
        raise ValueError(f"{PACKED_ATTENTION} attention needs one packed row and packed_seq_lens")
    outputs, start = [], 0
    for length in packed_seq_lens:
        part = slice(start, start + length)
        output, _ = sdpa_attention_forward(
            module,
            query[:, :, part],
            key[:, :, part],
            value[:, :, part],
            None,
            is_causal=True,
            **kwargs,
        )
        outputs.append(output)  # (1, length, heads, head_dim)
        start += length
    return torch.cat(outputs, dim=1), None


def use_packed_attention(model: Any) -> None:
    """Switch ``model`` to :data:`PACKED_ATTENTION` (registered with transformers on first use).

    Having no mask function registered, transformers builds no mask for it at all.
    """
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_ATTENTION, _packed_sdpa_attention)
    model.set_attn_implementation(PACKED_ATTENTION)


def packed_loss_sum(model: Any, examples: list[Example], *, device: str) -> tuple[Any, int]:
    """Summed cross-entropy over the answer tokens of ``examples`` run as one packed row.

    Works with the stock sdpa/eager attention (block-diagonal mask from the position ids) and,
    faster, with :data:`PACKED_ATTENTION` (per-sequence attention from ``packed_seq_lens``).
    """
    import torch

    batch = pack(examples)
    output = model(
        input_ids=batch["input_ids"].to(device),
        position_ids=batch["position_ids"].to(device),
        attention_mask=None,  # None: sdpa/eager derive the packed mask from position_ids
        packed_seq_lens=tuple(len(example.input_ids) for example in examples),
        use_cache=False,
        logits_to_keep=batch["keep"].to(device),
    )
    logits = output.logits.reshape(-1, output.logits.shape[-1]).float()
    targets = batch["targets"].to(device)
    loss_sum = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    return loss_sum, int(targets.numel())
