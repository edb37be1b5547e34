"""Two tiny fine-tuned students of the bundled SmolLM2, for the serving tests.

Both learn the demo task's answer format (DSPy's ChatAdapter, the program below, no demos) in a
few LoRA steps; ``A`` answers each review's sentiment, ``B`` answers ``mixed`` whatever the review
says, so the two answer differently. Training takes about a minute on 2 cores, so each adapter is
kept in ``var/test-students/`` under a hash of everything that decides its weights and trained
again only when that changes (one process trains, others wait for it: a file lock); each test
session registers them in its own artifact directory.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# The program the students serve (SENTIMENT_SPEC in tests/base.py, with its instructions).
PROGRAM_SPEC: dict[str, Any] = {
    "name": "sentiment",
    "modules": [
        {
            "name": "classify",
            "type": "Predict",
            "signature": "text -> sentiment",
            "instructions": "Classify the sentiment of the review.",
        }
    ],
}
TEXTS = [
    ("I love this movie.", "positive"),
    ("I hate this movie.", "negative"),
    ("What a wonderful day.", "positive"),
    ("This was a terrible meal.", "negative"),
    ("The service was great.", "positive"),
    ("The room was dirty and cold.", "negative"),
    ("Best purchase I ever made.", "positive"),
    ("It broke after one day.", "negative"),
]
# What each student answers for a review with this true label.
ANSWERS = {
    "A": {"positive": "positive", "negative": "negative"},
    "B": {"positive": "mixed", "negative": "mixed"},
}
SEEDS = {"A": 1, "B": 2}
CACHE = ROOT / "var" / "test-students"


def model_id(student: str) -> str:
    return f"bftweb:smollm2:ft-student-{student.lower()}"


def _signature() -> Any:
    from jobs.engine.program_module import build_program
    from jobs.engine.programs import parse_program_spec

    program = build_program(parse_program_spec(PROGRAM_SPEC))
    (_name, predictor), *_ = program.named_predictors()
    return predictor.signature


def prompt(text: str) -> list[dict[str, str]]:
    """The chat messages the program sends for ``text`` (ChatAdapter, no demos)."""
    from jobs.engine.training_data import chat_adapter

    messages: list[dict[str, str]] = chat_adapter().format(_signature(), [], {"text": text})
    return messages


def training_rows(student: str) -> list[dict[str, Any]]:
    """ChatAdapter rows for the program's one predictor, as a bootstrap would store them."""
    from jobs.engine.training_data import call_messages, signature_to_dict

    signature = signature_to_dict(_signature())
    return [
        {
            "messages": call_messages(
                {
                    "signature": signature,
                    "inputs": {"text": text},
                    "outputs": {"sentiment": ANSWERS[student][label]},
                }
            )
        }
        for text, label in TEXTS
    ]


def _config(student: str) -> Any:
    from jobs.engine.types import FinetuneConfig

    return FinetuneConfig(
        base_model="smollm2",
        epochs=None,
        min_steps=12,
        max_steps=12,
        batch_size=4,
        learning_rate=2e-3,
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        bf16=False,
        seed=SEEDS[student],
        checkpoint_every_steps=1000,
    )


@functools.cache
def adapter_dir(student: str) -> Path:
    """The student's adapter, trained now unless this exact one is cached already."""
    import peft
    import torch
    import transformers

    rows, config = training_rows(student), _config(student)
    fingerprint = json.dumps(
        [rows, config.to_dict(), torch.__version__, transformers.__version__, peft.__version__],
        sort_keys=True,
    )
    digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:12]
    target = CACHE / f"{student}-{digest}"
    CACHE.mkdir(parents=True, exist_ok=True)
    # One trainer at a time: another pytest-xdist worker that needs it waits, then finds it cached.
    with (CACHE / f"{student}-{digest}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "adapter" / "adapter_config.json").is_file():
            _train(student, rows, config, target)
    return target / "adapter"


def _train(student: str, rows: list[dict[str, Any]], config: Any, target: Path) -> None:
    from jobs.engine import model_store
    from jobs.engine.finetune import finetune

    work = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    previous = model_store.artifacts_dir()
    model_store.configure(artifacts_dir=work / "artifacts")  # a throwaway registry entry
    try:
        finetune(config, rows, output_dir=work / "run", model_id=model_id(student), resume=False)
    finally:
        model_store.configure(artifacts_dir=previous)
    target.mkdir(parents=True, exist_ok=True)
    (work / "run" / "adapter").rename(target / "adapter")  # atomic: never seen half-written
    shutil.rmtree(work, ignore_errors=True)


def register(student: str, *, owner: str | None = None) -> str:
    """Register the student's id in the current artifact directory; return the id."""
    from jobs.engine import model_store

    path = adapter_dir(student)
    model_store.register_finetuned(
        model_id(student), base_model="smollm2", adapter_dir=path, manifest={}, owner=owner
    )
    return model_id(student)
