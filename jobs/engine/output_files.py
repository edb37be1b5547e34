"""The files of a fine-tune's output directory, named once: what jobs/engine/finetune.py and
checkpoints.py write there, and what the web app offers for download (jobs/services/artifacts.py).

The rows a fine-tune trains on are kept once, in ``train.jsonl``: written before the first step,
so a retry trains on the same data and the download is the data it trained on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ADAPTER_DIR = "adapter"  # the LoRA adapter and its tokenizer (peft's save_pretrained)
ADAPTER_CONFIG = "adapter_config.json"  # peft's: every adapter directory holds one
CHECKPOINT_DIR = "checkpoint"  # the latest resumable checkpoint (checkpoints.py)
MANIFEST_FILE = "manifest.json"  # config, plan, data hash, losses, versions
TRAIN_FILE = "train.jsonl"  # the chat rows, one JSON object a line
PROGRAM_FILE = "program.json"  # the compiled DSPy program (export.py), written on success
# Job directories written before train.jsonl came first held the same rows here as well.
OLD_ROWS_FILE = "rows.jsonl"


def write_rows(output_dir: Path, rows: Iterable[dict[str, Any]]) -> Path:
    """``rows`` as ``output_dir/train.jsonl``, replaced whole (never half-written)."""
    path = output_dir / TRAIN_FILE
    tmp = output_dir / f"{TRAIN_FILE}.tmp-{os.getpid()}"
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def read_rows(output_dir: Path) -> list[dict[str, Any]] | None:
    """The rows kept in ``output_dir`` (an older directory's ``rows.jsonl`` too), or None."""
    for name in (TRAIN_FILE, OLD_ROWS_FILE):
        path = output_dir / name
        if path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            return [json.loads(line) for line in lines if line.strip()]
    return None
