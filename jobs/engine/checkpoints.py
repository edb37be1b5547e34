"""Resumable training checkpoints: the latest adapter, optimizer and RNG state of a fine-tune.

A checkpoint is written into a temporary directory and swapped in, so a crash leaves the previous
one whole; a resume refuses different rows or a changed config (except the fields listed in
RESUME_TOLERATED_FIELDS, which do not change the result).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from jobs.engine.output_files import ADAPTER_DIR, CHECKPOINT_DIR
from jobs.engine.types import FinetuneConfig

# Config fields that may change between a stopped run and its resume without changing the result.
RESUME_TOLERATED_FIELDS = ("checkpoint_every_steps",)


def config_for_resume(config: FinetuneConfig) -> dict[str, Any]:
    data = config.to_dict()
    for name in RESUME_TOLERATED_FIELDS:
        data.pop(name, None)
    return data


def read_checkpoint_meta(output_dir: Path) -> dict[str, Any] | None:
    checkpoint = output_dir / CHECKPOINT_DIR
    previous = output_dir / (CHECKPOINT_DIR + ".old")
    if not checkpoint.exists() and previous.exists():
        previous.rename(checkpoint)  # a crash between the two renames of save_checkpoint
    meta = checkpoint / "meta.json"
    return json.loads(meta.read_text()) if meta.exists() else None


def check_resumable(
    meta: dict[str, Any], config: FinetuneConfig, hash_: str, output_dir: Path
) -> None:
    where = output_dir / CHECKPOINT_DIR
    if meta["data_hash"] != hash_:
        raise ValueError(
            f"cannot resume from {where}: it was trained on different rows (data hash "
            f"{meta['data_hash'][:12]}, these rows {hash_[:12]}); use a new output dir or resume=False"
        )
    now = config_for_resume(config)
    # A field added to FinetuneConfig after the checkpoint was written (min_steps, say) is missing
    # from it: the run that wrote it trained as that field's default does.
    defaults = config_for_resume(FinetuneConfig(base_model=config.base_model))
    saved = {
        **{name: defaults[name] for name in now if name not in meta["config"]},
        **meta["config"],
    }
    changed = sorted(name for name in set(saved) | set(now) if saved.get(name) != now.get(name))
    if changed:
        details = ", ".join(f"{name}: {saved.get(name)!r} -> {now.get(name)!r}" for name in changed)
        raise ValueError(f"cannot resume from {where}: the config changed ({details})")


def save_checkpoint(
    output_dir: Path, *, model: Any, state: dict[str, Any], meta: dict[str, Any]
) -> None:
    """Write the checkpoint into a tmp dir, then swap it in; only the latest one is kept."""
    import torch

    checkpoint = output_dir / CHECKPOINT_DIR
    tmp = output_dir / f"{CHECKPOINT_DIR}.tmp-{os.getpid()}"
    previous = output_dir / (CHECKPOINT_DIR + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp / ADAPTER_DIR)
    torch.save(state, tmp / "state.pt")
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(previous, ignore_errors=True)
    if checkpoint.exists():
        checkpoint.rename(previous)
    tmp.rename(checkpoint)
    shutil.rmtree(previous, ignore_errors=True)


def rng_state(device: str) -> dict[str, Any]:
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], device: str) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if device == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
