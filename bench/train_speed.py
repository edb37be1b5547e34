"""Training tokens/s: our LoRA loop (jobs.engine.finetune) vs TRL's SFTTrainer, same data and knobs.

Both train SmolLM2 (the bundled model) with the same LoRA r/alpha/dropout/targets, batch size,
gradient accumulation, learning rate, max length, number of optimizer steps, bf16 on/off, and
loss on the answer only (TRL: prompt-completion conversational rows, ``completion_only_loss``).
TRL runs twice: its default (padded batches) and ``padding_free=True``.

Tokens are counted the same way for every variant: non-padding tokens that went through the
model (for TRL a forward pre-hook on the decoder sums the attention mask, or the row length when
there is none). "all" is tokens / time from the start of training to the end of the last step;
"steady" leaves out the first step (kernel warm-up, allocator growth). "tok/cpu-s" is steady
tokens per second of this process's CPU time: steadier than wall time when other processes
share the cores (the wall-time figures then mostly measure the neighbours).

Runs on CUDA when a GPU is present, else on CPU, in the precision jobs.engine.precision chooses
for this host (bf16 autocast only where it is native and faster; --no-bf16: fp32). TRL runs in the
same precision. Our loop then runs twice more, forced to bf16 and forced to fp32
(``BFT_CPU_BF16=on|off`` on CPU, the config's bf16 flag on CUDA), --compare-steps steps each, so
the chosen precision shows next to both; the "steady" column compares them fairly (the runs may
differ in length). The CPU's model, flags and torch's CPU capability are printed with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

SYSTEM = (
    "Your input fields are:\n1. `text` (str)\nYour output fields are:\n1. `reasoning` (str)\n"
    "2. `label` (str)\nYour objective is: Classify the review."
)
VOCABULARY = (
    "the a this movie film plot actor actress scene story ending music camera director script "
    "was is felt seemed really quite very too not never always slow fast funny sad dark bright "
    "long short boring moving clever silly great awful fine good bad and but so because while"
)
WORDS = VOCABULARY.split()
LABELS = ("positive", "negative", "neutral")


def synthetic_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """n ChatAdapter-shaped rows of roughly 150-250 tokens (SmolLM2 tokenizer), seeded."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 70)))
        reasoning = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40)))
        user = (
            f"[[ ## text ## ]]\n{text}\n\nRespond with `[[ ## reasoning ## ]]`, then "
            "`[[ ## label ## ]]`, then `[[ ## completed ## ]]`."
        )
        answer = f"[[ ## reasoning ## ]]\n{reasoning}\n\n[[ ## label ## ]]\n{rng.choice(LABELS)}\n\n[[ ## completed ## ]]"
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
        ]
        rows.append({"messages": messages})
    return rows


@dataclass
class Measured:
    name: str
    tokens: int  # non-padding tokens through the model
    seconds: float  # start of training to the end of the last step
    steady_tokens: int  # the same, from the end of step 1
    steady_seconds: float
    steady_cpu_seconds: float  # process CPU time over the same steps
    padded_tokens: int  # tokens including padding (== tokens when padding-free)
    final_loss: float | None
    steps: int = 0  # optimizer steps run
    precision: str = ""  # bf16 or fp32, and why

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def steady_tokens_per_s(self) -> float:
        return self.steady_tokens / self.steady_seconds if self.steady_seconds > 0 else float("nan")

    @property
    def steady_tokens_per_cpu_s(self) -> float:
        cpu = self.steady_cpu_seconds
        return self.steady_tokens / cpu if cpu > 0 else float("nan")


@contextlib.contextmanager
def cpu_bf16(value: str | None) -> Iterator[None]:
    """BFT_CPU_BF16 set to ``value`` (None: left as it is) for the duration."""
    from jobs.engine.precision import ENV_CPU_BF16

    previous = os.environ.get(ENV_CPU_BF16)
    if value is not None:
        os.environ[ENV_CPU_BF16] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(ENV_CPU_BF16, None)
        else:
            os.environ[ENV_CPU_BF16] = previous


def run_ours(
    rows: list[dict[str, Any]],
    config: Any,
    workdir: Path,
    *,
    name: str = "bftweb loop (packed)",
    tag: str = "ours",
) -> Measured:
    from jobs.engine.finetune import finetune

    progress: list[Any] = []
    cpu: list[float] = []

    def record(step: Any) -> None:
        progress.append(step)
        cpu.append(time.process_time())

    result = finetune(
        config,
        rows,
        output_dir=workdir / tag,
        model_id=f"bftweb:smollm2:ft-bench-{tag}",
        on_progress=record,
        resume=False,
    )
    first, last = progress[0], progress[-1]
    first_tokens = round(first.tokens_per_s * first.elapsed_s)
    manifest = json.loads(Path(result.manifest_path).read_text())
    return Measured(
        name=name,
        tokens=result.train_tokens,
        seconds=last.elapsed_s,
        steady_tokens=result.train_tokens - first_tokens,
        steady_seconds=last.elapsed_s - first.elapsed_s,
        steady_cpu_seconds=cpu[-1] - cpu[0],
        padded_tokens=result.train_tokens,
        final_loss=result.final_loss,
        steps=result.steps,
        precision=manifest["precision"]["reason"],
    )


def run_forced(
    rows: list[dict[str, Any]], config: Any, workdir: Path, *, bf16: bool, device: str
) -> Measured:
    """Our loop forced to bf16 or fp32: BFT_CPU_BF16 on CPU, the config's flag elsewhere."""
    label = "bf16" if bf16 else "fp32"
    name = f"bftweb loop, forced {label}"
    if device == "cpu":
        with cpu_bf16("on" if bf16 else "off"):
            return run_ours(rows, replace(config, bf16=True), workdir, name=name, tag=label)
    return run_ours(rows, replace(config, bf16=bf16), workdir, name=name, tag=label)


def run_trl(
    rows: list[dict[str, Any]],
    config: Any,
    workdir: Path,
    *,
    padding_free: bool,
    device: str,
    bf16: bool,
) -> tuple[Measured, list[int]]:
    """One SFTTrainer run; also returns the per-row completion token counts TRL trains on."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from jobs.engine import model_store

    resolved = model_store.resolve(config.base_model)
    tokenizer = model_store.load_tokenizer(resolved)
    torch.manual_seed(config.seed)
    model = model_store.load_base_model(resolved, device=device, dtype=torch.float32)
    counts = {"tokens": 0, "padded": 0}

    def count(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        input_ids: torch.Tensor = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        mask = kwargs.get("attention_mask")
        counts["padded"] += int(input_ids.numel())
        counts["tokens"] += int(mask.sum()) if mask is not None else int(input_ids.numel())

    model.model.register_forward_pre_hook(count, with_kwargs=True)  # the decoder under the LM head
    marks: list[tuple[float, int, float]] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            marks.append((time.monotonic(), 0, time.process_time()))

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if device == "cuda":
                torch.cuda.synchronize()
            marks.append((time.monotonic(), counts["tokens"], time.process_time()))

    dataset = Dataset.from_list(
        [{"prompt": row["messages"][:-1], "completion": row["messages"][-1:]} for row in rows]
    )
    args = SFTConfig(
        output_dir=str(workdir / ("trl-pf" if padding_free else "trl")),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=1,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        bf16=bf16,  # the precision our loop chose for this host
        gradient_checkpointing=False,  # TRL's default is True; our loop doesn't checkpoint
        max_length=None if padding_free else config.max_seq_length,  # TRL refuses both (rows fit)
        padding_free=padding_free,
        completion_only_loss=True,
        save_strategy="no",
        report_to=[],
        logging_steps=config.max_steps,
        disable_tqdm=True,
        seed=config.seed,
        dataloader_num_workers=0,
        use_cpu=device == "cpu",
    )
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[Clock()],
    )
    train_dataset = trainer.train_dataset
    assert isinstance(train_dataset, Dataset)  # ours, tokenized by SFTTrainer
    completion_tokens = [sum(label != -100 for label in row["labels"]) for row in train_dataset]
    output = trainer.train()
    (start, _, _), (first_end, first_tokens, first_cpu), (end, tokens, end_cpu) = (
        marks[0],
        marks[1],
        marks[-1],
    )
    measured = Measured(
        name="TRL SFTTrainer" + (" padding_free" if padding_free else " (padded)"),
        tokens=tokens,
        seconds=end - start,
        steady_tokens=tokens - first_tokens,
        steady_seconds=end - first_end,
        steady_cpu_seconds=end_cpu - first_cpu,
        padded_tokens=counts["padded"],
        final_loss=output.training_loss,  # TRL reports the mean over the run, ours the last step
        steps=config.max_steps,
        precision="bf16" if bf16 else "fp32",
    )
    return measured, completion_tokens


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.train_speed", description=__doc__)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--no-bf16", action="store_true", help="train in fp32")
    parser.add_argument("--no-trl", action="store_true", help="only our loop")
    parser.add_argument(
        "--compare-steps",
        type=int,
        default=None,
        help="steps of each forced-bf16 / forced-fp32 run of our loop (default: min(--steps, 3); "
        "0 skips them; emulated bf16 can be ~20x slower than fp32)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    options = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    from jobs.engine import model_store, packing
    from jobs.engine.precision import choose_precision, describe_cpu
    from jobs.engine.types import FinetuneConfig

    torch.set_num_threads(options.threads)
    device = model_store.pick_device()
    config = FinetuneConfig(
        base_model=model_store.BUNDLED_NAME,
        max_steps=options.steps,
        learning_rate=2e-4,
        warmup_ratio=0.1,
        batch_size=options.batch_size,
        gradient_accumulation_steps=options.grad_accum,
        max_seq_length=512,
        bf16=not options.no_bf16,
        checkpoint_every_steps=10**6,
    )
    compare_steps = (
        min(options.steps, 3) if options.compare_steps is None else options.compare_steps
    )
    precision = choose_precision(device, config.bf16)  # cached: the runs below get the same answer
    rows = synthetic_rows(options.rows, seed=0)
    tokenizer = model_store.load_tokenizer(model_store.resolve(config.base_model))
    data = packing.tokenize_rows(tokenizer, rows, max_seq_length=config.max_seq_length)
    lengths = [len(example.input_ids) for example in data.examples]
    print(
        f"device {device} ({torch.get_num_threads()} CPU threads, load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores), torch {torch.__version__}, "
        f"transformers {transformers.__version__}"
    )
    print(describe_cpu())
    print(f"chosen precision: {precision.reason}")
    print(
        f"data: {len(rows)} rows, {min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f}); "
        f"{config.max_steps} steps x {config.batch_size} rows x {config.gradient_accumulation_steps} accum; "
        f"LoRA r{config.lora_r}/a{config.lora_alpha} on {','.join(config.target_modules)}; "
        f"loss on the answer only"
    )

    results: list[Measured] = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        workdir = Path(tmp)
        # the bench's fine-tuned model is registered in the temp dir, not for real
        model_store.configure(artifacts_dir=workdir / "artifacts")
        chosen = "bf16" if precision.bf16 else "fp32"
        results.append(run_ours(rows, config, workdir, name=f"bftweb loop (packed), {chosen}"))
        print(f"{results[0].name}: {results[0].tokens_per_s:.0f} tok/s", flush=True)
        if compare_steps > 0:
            # another seed: other rows, so no run replays the shapes (kernels) an earlier one warmed
            short = replace(config, max_steps=compare_steps, seed=config.seed + 1)
            for bf16 in (True, False):
                measured = run_forced(rows, short, workdir, bf16=bf16, device=device)
                results.append(measured)
                print(
                    f"{measured.name}: {measured.tokens_per_s:.0f} tok/s ({measured.precision})",
                    flush=True,
                )
        if not options.no_trl:
            for padding_free in (False, True):
                measured, completion_tokens = run_trl(
                    rows,
                    config,
                    workdir,
                    padding_free=padding_free,
                    device=device,
                    bf16=precision.bf16,
                )
                results.append(measured)
                print(f"{measured.name}: {measured.tokens_per_s:.0f} tok/s", flush=True)
            ours_labels = [example.n_label_tokens for example in data.examples]
            same = "same" if completion_tokens == ours_labels else "DIFFERENT"
            print(f"answer tokens per row, ours vs TRL's completion_mask: {same}")

    print()
    print(describe_cpu())
    print(f"chosen precision: {precision.reason}")
    print(
        f"{'variant':34} {'steps':>5} {'tokens':>7} {'padded':>7} {'seconds':>8} {'tok/s':>7} "
        f"{'steady':>7} {'tok/cpu-s':>9} {'ours/this':>9}"
    )
    base = results[0]
    for m in results:
        print(
            f"{m.name:34} {m.steps:5d} {m.tokens:7d} {m.padded_tokens:7d} {m.seconds:8.1f} "
            f"{m.tokens_per_s:7.0f} {m.steady_tokens_per_s:7.0f} {m.steady_tokens_per_cpu_s:9.0f} "
            f"{base.tokens_per_s / m.tokens_per_s:8.2f}x"
        )
    print(f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(
        "ours/this = our tok/s / that variant's tok/s (all steps); the forced runs are shorter, "
        "compare their steady column. TRL runs in the chosen precision. Not matched: row order (each its own "
        "seeded shuffle); TRL also computes entropy/accuracy metrics per step and runs HF Trainer's "
        "loop; lr warmup 1 step in both."
    )


if __name__ == "__main__":
    main()
