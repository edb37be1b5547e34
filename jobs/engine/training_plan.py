"""The training plan: how many epochs and optimizer steps a set of rows gets, and in what order.

Plain arithmetic on a :class:`~jobs.engine.types.FinetuneConfig` (no torch), so the fine-tune
form's preview, the trace-set freeze and the worker's loop get the same answer.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from typing import Any

from jobs.engine.types import FinetuneConfig

# With ``epochs`` unset, a set gets enough epochs for ``min_steps`` optimizer steps, within these
# bounds: a large set still gets one whole pass, a tiny one is not repeated without end.
AUTO_MIN_EPOCHS = 1
AUTO_MAX_EPOCHS = 10


@dataclass(frozen=True)
class TrainingPlan:
    """How a fine-tune of ``rows`` rows runs under a config: the one rule is :func:`training_plan`."""

    rows: int
    rows_per_step: int  # batch_size x gradient_accumulation_steps
    steps_per_epoch: int
    epochs: int
    auto_epochs: bool  # the epochs came from the rule (config.epochs unset)
    total_steps: int  # after max_steps
    warmup_steps: int
    min_steps: int
    warnings: tuple[str, ...]  # why this plan may not teach the student (empty: none known)

    @property
    def too_few_steps(self) -> bool:
        return self.total_steps < self.min_steps

    def describe(self) -> str:
        """One line, e.g. "51 rows, 4 per step: 13 steps per epoch x 3 epochs (auto) = 39 steps"."""
        epochs = f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        if self.auto_epochs:
            epochs += f" (auto: at least {self.min_steps} steps)"
        line = (
            f"{self.rows} rows, {self.rows_per_step} per step: {self.steps_per_epoch} steps per "
            f"epoch x {epochs} = {self.total_steps} optimizer steps"
        )
        if self.total_steps < self.steps_per_epoch * self.epochs:
            line += " (max steps)"
        return line

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["warnings"] = list(self.warnings)
        data["summary"] = self.describe()
        return data


def training_plan(n_rows: int, config: FinetuneConfig) -> TrainingPlan:
    """The epochs and optimizer steps ``n_rows`` training rows get under ``config``.

    The rule: an optimizer step takes ``batch_size x gradient_accumulation_steps`` rows. With
    ``config.epochs`` set, that many epochs run. Unset, the set gets the fewest epochs that reach
    ``config.min_steps`` steps, at least AUTO_MIN_EPOCHS and at most AUTO_MAX_EPOCHS: on 15 rows
    at 4 per step one epoch is 4 steps, which taught SmolLM2 nothing; 6 epochs make 24. Then
    ``max_steps`` caps the total. A plan under ``min_steps`` carries a warning that says what
    to change. Plain arithmetic: the form's preview and the worker get the same answer.
    """
    rows_per_step = config.batch_size * config.gradient_accumulation_steps
    micro = math.ceil(n_rows / config.batch_size)
    steps_per_epoch = math.ceil(micro / config.gradient_accumulation_steps)
    auto = config.epochs is None
    if config.epochs is not None:
        epochs = config.epochs
    elif steps_per_epoch:
        needed = math.ceil(config.min_steps / steps_per_epoch)
        epochs = min(AUTO_MAX_EPOCHS, max(AUTO_MIN_EPOCHS, needed))
    else:
        epochs = AUTO_MIN_EPOCHS
    total = steps_per_epoch * epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    warnings: list[str] = []
    if n_rows == 0:
        warnings.append("no training rows")
    elif total < config.min_steps:
        if config.max_steps is not None and config.max_steps < steps_per_epoch * epochs:
            fix = "raise max steps or leave it empty"
        elif not auto:
            needed = math.ceil(config.min_steps / steps_per_epoch)
            fix = f"leave epochs empty (auto) or set them to {needed}"
        else:
            fix = (
                f"{n_rows} rows are too few even at {AUTO_MAX_EPOCHS} epochs: keep more traces or "
                "lower the batch size"
            )
        warnings.append(
            f"only {total} optimizer step{'s' if total != 1 else ''}, under {config.min_steps}: "
            f"likely too few for the student to learn the answer format ({fix})"
        )
    return TrainingPlan(
        rows=n_rows,
        rows_per_step=rows_per_step,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        auto_epochs=auto,
        total_steps=total,
        warmup_steps=math.ceil(config.warmup_ratio * total),
        min_steps=config.min_steps,
        warnings=tuple(warnings),
    )


@dataclass(frozen=True)
class Step:
    """One optimizer step of the plan: its epoch, its micro-batches (example indices)."""

    epoch: int
    micro_batches: list[list[int]]
    epoch_position: int  # micro-batches of this epoch consumed once this step is done
    micro_per_epoch: int


def plan_steps(n_examples: int, config: FinetuneConfig) -> list[Step]:
    """Every optimizer step of :func:`training_plan`, in order, deterministic from the seed (so
    a resume replays it).

    Each epoch shuffles the example indices with one ``random.Random(config.seed)``; an epoch's
    micro-batches are grouped by ``gradient_accumulation_steps`` (its last step may take fewer).
    """
    plan = training_plan(n_examples, config)
    rng = random.Random(config.seed)
    ga = config.gradient_accumulation_steps
    steps: list[Step] = []
    for epoch in range(plan.epochs):
        order = list(range(n_examples))
        rng.shuffle(order)
        micro = [order[i : i + config.batch_size] for i in range(0, n_examples, config.batch_size)]
        for start in range(0, len(micro), ga):
            group = micro[start : start + ga]
            steps.append(Step(epoch, group, start + len(group), len(micro)))
    return steps[: plan.total_steps]


def lr_factor(step: int, *, total_steps: int, warmup_steps: int) -> float:
    """Linear warmup then linear decay; ``step`` is 0-based. No step runs at lr 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return (total_steps - step) / max(1, total_steps - warmup_steps)
