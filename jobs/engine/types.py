"""Plain data passed into and out of the engine. Cheap to import: no torch, no dspy, no Django.

Everything here is JSON-safe through ``to_dict()`` / ``from_dict()`` so the web layer can store
it in a row and hand it back to a worker on another host.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ModelKind = Literal["local", "litellm"]
DemoStrategy = Literal["random", "stratified_search"]
DEMO_STRATEGIES: tuple[DemoStrategy, ...] = ("random", "stratified_search")
_Data = TypeVar("_Data", bound="DataclassInstance")


def _from_dict(cls: type[_Data], data: dict[str, Any]) -> _Data:
    """Build a dataclass from a dict, refusing unknown keys with their names."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown key(s) {', '.join(map(repr, unknown))}")
    return cls(**data)


# What DSPy's ChatAdapter writes for a demo's missing field (a labeled demo has no reasoning); a
# teacher that copies it into its own answers learned nothing from the demos.
DEMO_PLACEHOLDER = "Not supplied for this particular example."


def copies_placeholder(values: Iterable[Any]) -> bool:
    """Whether any of these field values contains :data:`DEMO_PLACEHOLDER`."""
    return any(isinstance(v, str) and DEMO_PLACEHOLDER in v for v in values)


@dataclass(frozen=True)
class ModelSpec:
    """Which LM to run, and how.

    kind="local": ``name`` is an HF model directory, a hub id (only from the local HF cache: no
    downloads), a ``.gguf`` file, ``"smollm2"`` (the bundled SmolLM2-135M-Instruct), or a
    fine-tuned id ``"bftweb:<student>:ft-<job>"`` registered in the models directory.
    kind="litellm": ``name`` is a LiteLLM model string; ``api_key_env`` names the environment
    variable holding the key on the worker (the key itself is never stored).
    """

    kind: ModelKind
    name: str
    api_base: str = ""
    api_key_env: str = ""
    temperature: float = 0.0
    max_tokens: int = 256

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class MetricSpec:
    """A built-in metric on one output field; ``passed`` means ``score >= threshold``.

    name: exact_match | normalized_match | contains | token_f1 | numeric | regex
    options: numeric -> {"tolerance": float, "relative": bool}; regex -> {"pattern": str}
    """

    name: str
    field: str
    threshold: float = 1.0
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricSpec:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class BootstrapConfig:
    # 16: a local teacher answers them in one continuous batch (its max_batch); on 2 CPU cores a
    # bigger batch answers more per second (bench.serve_speed: 8 at once 5.5x one at a time, 32 at
    # once 13x). An API teacher gets 16 requests at once.
    num_threads: int = 16
    num_demos: int = 0  # labeled demos from the train split given to the teacher
    demo_seed: int = 0
    limit: int | None = None  # bootstrap at most this many examples
    temperature: float | None = None  # the teacher's sampling temperature; None: the model's own
    # The teacher answers its labeled demos first, and the passing answers keep their reasoning
    # (DSPy's BootstrapFewShot step; see bootstrap.reason_demos).
    reason_demos: bool = False
    # How the num_demos demos are chosen (jobs/engine/demos.py). "random": a seeded sample of the
    # train rows. "stratified_search": demo_candidates sets stratified over the metric field's gold
    # values, each (and a shuffled order of the best) scored by the teacher on demo_search_rows
    # held train rows; the best set is kept.
    demo_strategy: DemoStrategy = "random"
    demo_candidates: int = 4
    demo_search_rows: int = 8
    # Best-of-N: an example whose answer fails is asked again up to `retries` times at
    # retry_temperature (as DSPy's BootstrapFewShot rounds do); the first passing answer is kept
    # and every attempt is recorded on the trace.
    retries: int = 0
    retry_temperature: float = 0.7
    # The smoke test (jobs/services/smoke.py): this many stratified train examples first; a run
    # that looks broken stops "checked" before spending the rest. 0: no smoke test.
    smoke_size: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # Knobs that mean nothing with these settings are left out: stored as before they existed.
        unused = []
        if self.demo_strategy == "random":
            unused += ["demo_strategy", "demo_candidates", "demo_search_rows"]
        if not self.retries:
            unused += ["retries", "retry_temperature"]
        if not self.smoke_size:
            unused += ["smoke_size"]
        for key in unused:
            del data[key]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BootstrapConfig:
        return _from_dict(cls, data)

    def teacher_for_run(self, teacher: ModelSpec) -> ModelSpec:
        """The teacher as this run samples it."""
        if self.temperature is None:
            return teacher
        return replace(teacher, temperature=self.temperature)


@dataclass(frozen=True)
class BootstrapProgress:
    done: int
    total: int
    passed: int
    failed: int
    errored: int
    lm_calls: int
    tokens: int
    elapsed_s: float


@dataclass(frozen=True)
class FinetuneConfig:
    """Every knob of a LoRA fine-tune. Defaults suit a small model on one device, and a small set:
    how many epochs and steps a set of rows gets is ``training_plan.training_plan``'s rule."""

    # The key of a job's config JSON that records its training plan (see from_dict).
    PLAN_KEY: ClassVar[str] = "plan"

    base_model: str  # a local model name, as in ModelSpec(kind="local").name
    # None: as many epochs as min_steps needs (training_plan.training_plan), within its bounds.
    epochs: int | None = None
    # With epochs None, at least this many optimizer steps: a small model learns the answer
    # format from repeated updates, not from one pass over a few rows (SmolLM2-135M on 24 topic
    # rows: 6 steps taught nothing, 12 half, 18 all; see training_plan.training_plan).
    min_steps: int = 24
    max_steps: int | None = None  # stop after this many optimizer steps (None: epochs decide)
    learning_rate: float = 5e-4
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    batch_size: int = 4  # rows (conversations) per micro-batch before packing
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0  # clip the LoRA gradients' global norm (0: off)
    max_seq_length: int = 1024  # a longer row is truncated; its truncation is reported
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    # Every projection of attention and MLP: after 18 steps on 24 rows, q/k/v/o alone got 9 of
    # 32 held-out rows right where all seven got 16 (the teacher's 16), for ~40 % more time a step.
    target_modules: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    bf16: bool = True  # bf16 autocast (CUDA, or CPU where supported)
    seed: int = 0
    checkpoint_every_steps: int = 50  # and always at the end and on a cooperative stop

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        data = dict(data)
        # A job's config JSON also records the plan its rows got (training_plan.training_plan): a
        # record derived from these knobs and the rows, not a knob itself.
        data.pop(cls.PLAN_KEY, None)
        if "target_modules" in data:
            data["target_modules"] = tuple(data["target_modules"])
        return _from_dict(cls, data)


@dataclass(frozen=True)
class TrainProgress:
    step: int
    total_steps: int
    epoch: float
    loss: float | None
    learning_rate: float
    tokens_per_s: float
    elapsed_s: float
    eta_s: float | None
    log: str = ""  # one human-readable line for the job's log tail
    checkpoint_step: int = 0  # the newest checkpoint on disk (0: none); a resume starts there


@dataclass(frozen=True)
class FinetuneResult:
    model_id: str  # e.g. "bftweb:smollm2:ft-12"; loads back via ModelSpec
    output_dir: str
    adapter_dir: str
    manifest_path: str
    steps: int
    total_steps: int
    stopped_early: bool  # a cooperative stop: the checkpoint is kept, resumable
    final_loss: float | None
    train_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
