"""LoRA supervised fine-tuning of a local causal LM on chat rows: our own loop, no HF Trainer/TRL.

Rows are what DSPy's ``ChatAdapter.format_finetune_data`` produces:
``{"messages": [{"role": "system" | "user" | "assistant", "content": str}, ...]}``. Only the last
assistant message is trained on (loss on its tokens only; the prompt is masked by position, never
by the pad id: SmolLM2's pad token is its EOS).

Padding-free packing: the rows of a micro-batch are concatenated into ONE row whose
``position_ids`` restart at 0 for every sequence, with ``attention_mask=None`` (the convention of
transformers' ``DataCollatorWithFlattening``). transformers 5.x honours it with every attention
implementation: ``masking_utils.find_packed_sequence_indices`` turns restarting position ids into
a block-diagonal causal mask for sdpa and eager (verified on CPU: same logits as each sequence
alone). But a block-diagonal mask still computes the whole (T x T) score matrix, and on CPU that
made the packed row slower than a padded batch. So training uses :data:`PACKED_ATTENTION`, a
registered attention function that runs plain causal SDPA on each sequence's slice of the packed
row (the sequence lengths travel as the ``packed_seq_lens`` forward kwarg): the big matmuls see
one padding-free row, attention does no cross-sequence work at all. Logits are computed only at
the positions that carry a label (``logits_to_keep`` as a boolean mask), which skips the vocab
projection for prompt tokens.

Heavy imports (torch, transformers, peft) happen inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.engine import model_store
from jobs.engine.checkpoints import (
    check_resumable,
    config_for_resume,
    read_checkpoint_meta,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from jobs.engine.output_files import ADAPTER_DIR, CHECKPOINT_DIR, MANIFEST_FILE, write_rows
from jobs.engine.packing import (
    PACKED_ATTENTION,
    ROLES,
    TokenizedData,
    packed_loss_sum,
    tokenize_rows,
    use_packed_attention,
)
from jobs.engine.precision import Precision, choose_precision
from jobs.engine.training_plan import Step, TrainingPlan, lr_factor, plan_steps, training_plan
from jobs.engine.types import FinetuneConfig, FinetuneResult, TrainProgress

logger = logging.getLogger(__name__)


# --- validation -------------------------------------------------------------------------------


def validate_config(config: FinetuneConfig) -> None:
    """Raise ValueError naming the first field whose value cannot train."""
    checks = [
        ("base_model", bool(config.base_model and config.base_model.strip()), "must name a model"),
        ("epochs", config.epochs is None or config.epochs >= 1, "must be None (auto) or >= 1"),
        ("min_steps", config.min_steps >= 1, "must be >= 1"),
        ("max_steps", config.max_steps is None or config.max_steps >= 1, "must be None or >= 1"),
        ("learning_rate", config.learning_rate > 0, "must be > 0"),
        ("warmup_ratio", 0 <= config.warmup_ratio < 1, "must be in [0, 1)"),
        ("weight_decay", config.weight_decay >= 0, "must be >= 0"),
        ("batch_size", config.batch_size >= 1, "must be >= 1"),
        ("gradient_accumulation_steps", config.gradient_accumulation_steps >= 1, "must be >= 1"),
        ("max_seq_length", config.max_seq_length >= 2, "must be >= 2"),
        ("lora_r", config.lora_r >= 1, "must be >= 1"),
        ("lora_alpha", config.lora_alpha > 0, "must be > 0"),
        ("lora_dropout", 0 <= config.lora_dropout < 1, "must be in [0, 1)"),
        ("target_modules", len(config.target_modules) >= 1, "must name at least one module"),
        ("max_grad_norm", config.max_grad_norm >= 0, "must be >= 0 (0 turns clipping off)"),
        ("checkpoint_every_steps", config.checkpoint_every_steps >= 1, "must be >= 1"),
    ]
    for name, ok, rule in checks:
        if not ok:
            raise ValueError(f"FinetuneConfig.{name} {rule} (got {getattr(config, name)!r})")


def validate_rows(rows: list[dict[str, Any]]) -> None:
    """Every row is {"messages": [...]} with known roles and string contents, ending with the answer."""
    if not rows:
        raise ValueError("no training rows: select at least one trace to fine-tune on")
    for index, row in enumerate(rows):
        messages = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(messages, list) or not messages:
            raise ValueError(
                f"row {index}: expected {{'messages': [...]}} with at least one message"
            )
        for position, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                raise ValueError(f"row {index}, message {position}: role must be one of {ROLES}")
            if not isinstance(message.get("content"), str):
                raise ValueError(f"row {index}, message {position}: content must be a string")
        if messages[-1]["role"] != "assistant":
            raise ValueError(f"row {index}: the last message must be the assistant's answer")


def validate_target_modules(model: Any, target_modules: tuple[str, ...]) -> None:
    """Each target must name Linear modules of the model (by last name part or dotted suffix)."""
    import torch

    linear_names = [
        name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)
    ]
    missing = [
        target
        for target in target_modules
        if not any(name == target or name.endswith("." + target) for name in linear_names)
    ]
    if missing:
        available = sorted({name.rsplit(".", 1)[-1] for name in linear_names})
        raise ValueError(
            f"FinetuneConfig.target_modules: {', '.join(missing)} not found in the model; "
            f"its linear modules are: {', '.join(available)}"
        )


def data_hash(rows: list[dict[str, Any]]) -> str:
    """sha256 of the canonical JSON of the rows: identifies the training data."""
    canonical = json.dumps(rows, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- the training loop ------------------------------------------------------------------------


def _autocast(
    device: str, bf16: bool
) -> tuple[Callable[[], AbstractContextManager[Any]], Precision]:
    """bf16 autocast over fp32 master weights where :func:`choose_precision` says it pays."""
    import contextlib

    import torch

    precision = choose_precision(device, bf16)
    if precision.bf16 and device in ("cuda", "cpu"):
        return (lambda: torch.autocast(device, dtype=torch.bfloat16)), precision
    return contextlib.nullcontext, precision


def _never_stop() -> bool:
    return False


def _ignore_progress(progress: TrainProgress) -> None:
    return None


def finetune(
    config: FinetuneConfig,
    rows: list[dict[str, Any]],
    *,
    output_dir: Path,
    model_id: str,
    on_progress: Callable[[TrainProgress], None] = _ignore_progress,
    should_stop: Callable[[], bool] = _never_stop,
    resume: bool = True,
    owner: str | None = None,
) -> FinetuneResult:
    """Train a LoRA adapter on the last assistant message of each row; register it as ``model_id``.

    ``owner`` is recorded in the registry with the id (who may use it; see model_store).

    Writes ``output_dir/train.jsonl`` (the rows) first, ``checkpoint/`` every
    ``checkpoint_every_steps``, on a stop and at the end, and at the end ``adapter/`` (+ tokenizer)
    and ``manifest.json`` (jobs/engine/output_files.py names them). A
    cooperative stop (``should_stop()`` true after a step) returns ``stopped_early=True`` with
    ``model_id=""``; calling again with ``resume=True`` continues from the checkpoint.
    Fine-tuning an already fine-tuned model id is refused (not supported yet).
    """
    _validate_request(config, rows, model_id)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    hash_ = data_hash(rows)
    resuming = resume and _checkpoint_to_resume(output_dir, config, hash_)
    write_rows(output_dir, rows)
    resolved = _resolve_base_model(config)

    run = _prepare_run(config, rows, resolved, output_dir=output_dir, resuming=resuming)
    state = _restore_state(run, output_dir) if resuming else _RunState()
    logger.info(
        "fine-tune %s on %s: %s, %d steps on %s",
        model_id,
        config.base_model,
        run.data_note,
        len(run.steps),
        run.device,
    )
    checkpoint = _Checkpointer(run, state, output_dir=output_dir, data_hash=hash_)
    outcome = _train(run, state, checkpoint, on_progress=on_progress, should_stop=should_stop)
    if outcome.stopped:
        logger.info(
            "fine-tune %s stopped at step %d/%d; checkpoint kept",
            model_id,
            state.step,
            len(run.steps),
        )
        return _stopped_result(run, state, output_dir)
    return _save_and_register(
        run,
        state,
        rows,
        output_dir=output_dir,
        model_id=model_id,
        owner=owner,
        data_hash=hash_,
        train_seconds=state.train_seconds + outcome.run_seconds,
        resumed_from_step=outcome.start_step,
    )


# --- the phases of finetune() ---------------------------------------------------------------------


@dataclass
class _Run:
    """What the training phases share: the data, the plan, and the model with its optimizer."""

    config: FinetuneConfig
    tokenizer: Any
    data: TokenizedData
    plan: TrainingPlan
    steps: list[Step]
    data_note: str  # one line on the data, for the log
    device: str
    model: Any  # the peft model, in train mode
    params: list[Any]  # its trainable parameters (the LoRA weights)
    optimizer: Any
    scheduler: Any
    autocast: Callable[[], AbstractContextManager[Any]]
    precision: Precision  # bf16 or fp32, and why


@dataclass
class _RunState:
    """How far the run is: what a checkpoint saves besides the weights and the optimizer."""

    step: int = 0  # optimizer steps done
    losses: list[float] = field(default_factory=list)  # one per step done
    train_tokens: int = 0
    train_seconds: float = 0.0  # training time of the runs before this one (a resume)


@dataclass(frozen=True)
class _Outcome:
    start_step: int  # where this run started (0, or the checkpoint it resumed from)
    stopped: bool  # a cooperative stop before the last step
    run_seconds: float  # this run's training time, saves excluded


def _validate_request(config: FinetuneConfig, rows: list[dict[str, Any]], model_id: str) -> None:
    """Raise ValueError on a config that cannot train, malformed rows or a foreign model id."""
    validate_config(config)
    validate_rows(rows)
    if not model_id.startswith(model_store.FINETUNED_PREFIX):
        raise ValueError(f"model_id must start with {model_store.FINETUNED_PREFIX!r}: {model_id!r}")


def _checkpoint_to_resume(output_dir: Path, config: FinetuneConfig, hash_: str) -> bool:
    """Whether ``output_dir`` holds a checkpoint to resume from; refuse one of other rows or config."""
    meta = read_checkpoint_meta(output_dir)
    if meta is None:
        return False
    check_resumable(meta, config, hash_, output_dir)
    return True


def _resolve_base_model(config: FinetuneConfig) -> model_store.ResolvedModel:
    """The student's directories on disk; a fine-tuned id is refused as a base."""
    resolved = model_store.resolve(config.base_model)
    if resolved.adapter_dir is not None:
        raise ValueError(
            f"FinetuneConfig.base_model: fine-tuning a fine-tuned model ({config.base_model!r}) is not "
            f"supported yet; fine-tune its base model {resolved.base_name!r} instead"
        )
    return resolved


def _prepare_run(
    config: FinetuneConfig,
    rows: list[dict[str, Any]],
    resolved: model_store.ResolvedModel,
    *,
    output_dir: Path,
    resuming: bool,
) -> _Run:
    """Tokenize and plan the data; load the base model with a new LoRA adapter, or the
    checkpoint's when resuming; set up the optimizer and the learning-rate schedule.

    The torch seed is set before the model loads, so a new adapter's initial weights depend on
    ``config.seed`` only.
    """
    import peft
    import torch

    tokenizer = model_store.load_tokenizer(resolved)
    data = tokenize_rows(tokenizer, rows, max_seq_length=config.max_seq_length)
    plan = training_plan(len(data.examples), config)
    steps = plan_steps(len(data.examples), config)
    total_steps = len(steps)
    warmup_steps = plan.warmup_steps

    device = model_store.pick_device()
    torch.manual_seed(config.seed)
    base = model_store.load_base_model(resolved, device=device, dtype=torch.float32)
    validate_target_modules(base, config.target_modules)
    use_packed_attention(base)
    if resuming:
        model = peft.PeftModel.from_pretrained(
            base, output_dir / CHECKPOINT_DIR / ADAPTER_DIR, is_trainable=True
        )
    else:
        lora = peft.LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.target_modules),
            task_type="CAUSAL_LM",
        )
        model = peft.get_peft_model(base, lora)
    model.train()
    params = [param for param in model.parameters() if param.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps=total_steps, warmup_steps=warmup_steps)
    )
    autocast, precision = _autocast(device, config.bf16)
    data_note = (
        f"{len(rows)} rows, {data.n_tokens} tokens, {data.truncated_rows} truncated to "
        f"{config.max_seq_length} tokens, {data.dropped_rows} dropped (no answer left) | plan: "
        + "; ".join([plan.describe(), *plan.warnings])
    )
    return _Run(
        config=config,
        tokenizer=tokenizer,
        data=data,
        plan=plan,
        steps=steps,
        data_note=data_note,
        device=device,
        model=model,
        params=params,
        optimizer=optimizer,
        scheduler=scheduler,
        autocast=autocast,
        precision=precision,
    )


def _restore_state(run: _Run, output_dir: Path) -> _RunState:
    """Load the checkpoint's optimizer, schedule and RNG state into ``run``; return its progress."""
    import torch

    state = torch.load(output_dir / CHECKPOINT_DIR / "state.pt", weights_only=True)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"], run.device)
    logger.info("resuming %s from step %d/%d", output_dir, state["step"], len(run.steps))
    return _RunState(
        step=state["step"],
        losses=list(state["losses"]),
        train_tokens=state["train_tokens"],
        train_seconds=state["train_seconds"],
    )


class _Checkpointer:
    """Saves the run as it stands (adapter, optimizer, schedule, RNG, progress) as the checkpoint."""

    def __init__(self, run: _Run, state: _RunState, *, output_dir: Path, data_hash: str) -> None:
        self.run = run
        self.state = state
        self.output_dir = output_dir
        self.data_hash = data_hash
        self.saved_step = state.step  # the newest checkpoint on disk
        self.started = time.monotonic()  # when this run's training started

    def save(self) -> None:
        run, state = self.run, self.state
        done = run.steps[state.step - 1] if state.step else None
        saved_state = {
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "rng": rng_state(run.device),
            "step": state.step,
            "losses": state.losses,
            "train_tokens": state.train_tokens,
            "train_seconds": state.train_seconds + (time.monotonic() - self.started),
        }
        meta = {
            "step": state.step,
            "total_steps": len(run.steps),
            "epoch": done.epoch if done else 0,
            # micro-batches done in that epoch
            "epoch_position": done.epoch_position if done else 0,
            "data_hash": self.data_hash,
            "config": config_for_resume(run.config),
        }
        save_checkpoint(self.output_dir, model=run.model, state=saved_state, meta=meta)
        self.saved_step = state.step


def _optimizer_step(run: _Run, step: Step) -> tuple[float, int, float]:
    """One optimizer step over the step's micro-batches (gradients accumulated, then clipped).

    Returns the step's loss (the token-level mean over all its micro-batches), the tokens it ran
    and the learning rate it used.
    """
    import torch

    batches = [[run.data.examples[i] for i in micro] for micro in step.micro_batches]
    n_label = sum(example.n_label_tokens for batch in batches for example in batch)
    step_loss = 0.0
    tokens = 0
    for batch in batches:
        with run.autocast():
            loss_sum, _ = packed_loss_sum(run.model, batch, device=run.device)
        loss = loss_sum / n_label  # token-level mean over the whole accumulated step
        loss.backward()
        step_loss += loss.item()
        tokens += sum(len(example.input_ids) for example in batch)
    if run.config.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(run.params, run.config.max_grad_norm)
    learning_rate = float(run.scheduler.get_last_lr()[0])
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return step_loss, tokens, learning_rate


def _train(
    run: _Run,
    state: _RunState,
    checkpoint: _Checkpointer,
    *,
    on_progress: Callable[[TrainProgress], None],
    should_stop: Callable[[], bool],
) -> _Outcome:
    """The training loop: the plan's remaining steps, each reported to ``on_progress``.

    Checkpoints every ``checkpoint_every_steps`` (before that step's report, so a reported
    checkpoint is always on disk) and once more at the end or on a stop, unless that step's
    checkpoint is already saved.
    """
    total_steps = len(run.steps)
    start_step = state.step
    run_tokens = 0
    stopped = False
    started = checkpoint.started
    for step_index in range(start_step, total_steps):
        plan = run.steps[step_index]
        step_loss, step_tokens, learning_rate = _optimizer_step(run, plan)
        run_tokens += step_tokens
        state.train_tokens += step_tokens
        step = state.step = step_index + 1
        state.losses.append(step_loss)

        elapsed = time.monotonic() - started
        tokens_per_s = run_tokens / elapsed if elapsed > 0 else 0.0
        eta = elapsed / (step - start_step) * (total_steps - step)
        log = f"step {step}/{total_steps} loss {step_loss:.4f} lr {learning_rate:.2e} {tokens_per_s:.0f} tok/s"
        if step == start_step + 1:
            resumed = f" | resumed from step {start_step}" if start_step else ""
            log += f" | {run.data_note}{resumed} | precision {run.precision.reason}"
        if step % run.config.checkpoint_every_steps == 0 and step < total_steps:
            checkpoint.save()
        on_progress(
            TrainProgress(
                step=step,
                total_steps=total_steps,
                epoch=plan.epoch + plan.epoch_position / plan.micro_per_epoch,
                loss=step_loss,
                learning_rate=learning_rate,
                tokens_per_s=tokens_per_s,
                elapsed_s=elapsed,
                eta_s=eta,
                log=log,
                checkpoint_step=checkpoint.saved_step,
            )
        )
        if step < total_steps and should_stop():
            stopped = True
            break

    run_seconds = time.monotonic() - started  # training only: the final save is not counted
    if checkpoint.saved_step != state.step:
        checkpoint.save()
    return _Outcome(start_step=start_step, stopped=stopped, run_seconds=run_seconds)


def _stopped_result(run: _Run, state: _RunState, output_dir: Path) -> FinetuneResult:
    """The result of a run stopped early: no model id, the checkpoint kept for a resume."""
    return FinetuneResult(
        model_id="",
        output_dir=str(output_dir),
        adapter_dir="",
        manifest_path="",
        steps=state.step,
        total_steps=len(run.steps),
        stopped_early=True,
        final_loss=state.losses[-1] if state.losses else None,
        train_tokens=state.train_tokens,
    )


def _save_and_register(
    run: _Run,
    state: _RunState,
    rows: list[dict[str, Any]],
    *,
    output_dir: Path,
    model_id: str,
    owner: str | None,
    data_hash: str,
    train_seconds: float,
    resumed_from_step: int,
) -> FinetuneResult:
    """Write the adapter (+ tokenizer) and ``manifest.json``; register ``model_id``."""
    import peft
    import torch
    import transformers

    config, data = run.config, run.data
    adapter_dir = output_dir / ADAPTER_DIR
    manifest_path = output_dir / MANIFEST_FILE
    tmp = output_dir / f"{ADAPTER_DIR}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    run.model.save_pretrained(str(tmp))
    run.tokenizer.save_pretrained(tmp)
    shutil.rmtree(adapter_dir, ignore_errors=True)
    tmp.rename(adapter_dir)
    final_loss = state.losses[-1] if state.losses else None
    manifest = {
        "model_id": model_id,
        "base_model": config.base_model,
        "config": config.to_dict(),
        "plan": run.plan.to_dict(),
        "data_hash": data_hash,
        "n_rows": len(rows),
        "n_examples": len(data.examples),
        "n_tokens": data.n_tokens,
        "n_label_tokens": sum(example.n_label_tokens for example in data.examples),
        "truncated_rows": data.truncated_rows,
        "dropped_rows": data.dropped_rows,
        "steps": state.step,
        "total_steps": len(run.steps),
        "final_loss": final_loss,
        "losses": state.losses,
        "train_tokens": state.train_tokens,
        "train_seconds": round(train_seconds, 3),
        "tokens_per_s": round(state.train_tokens / train_seconds, 1) if train_seconds > 0 else None,
        "resumed_from_step": resumed_from_step or None,
        "device": run.device,
        "bf16": run.precision.bf16,
        "precision": run.precision.to_dict(),
        "packing": f"padding-free rows, position ids restart per sequence, {PACKED_ATTENTION} attention",
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
    }
    manifest_path.write_text(json.dumps(manifest, indent=2))
    model_store.register_finetuned(
        model_id,
        base_model=config.base_model,
        adapter_dir=adapter_dir,
        manifest=manifest,
        owner=owner,
    )
    logger.info("fine-tune %s done: %d steps, final loss %s", model_id, state.step, final_loss)
    return FinetuneResult(
        model_id=model_id,
        output_dir=str(output_dir),
        adapter_dir=str(adapter_dir),
        manifest_path=str(manifest_path),
        steps=state.step,
        total_steps=len(run.steps),
        stopped_early=False,
        final_loss=final_loss,
        train_tokens=state.train_tokens,
    )
