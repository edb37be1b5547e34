"""LoRA fine-tuning on the real bundled SmolLM2, on CPU, with a handful of short chat rows."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from jobs.engine import finetune as ft
from jobs.engine import model_store, packing
from jobs.engine import training_plan as tp
from jobs.engine.types import FinetuneConfig, TrainProgress

torch.set_num_threads(2)
# The slow tests below share this module's loaded model and trained run: one xdist process runs them.
SHARED = pytest.mark.xdist_group("engine-finetune")

WORDS = [
    ("love", "positive"),
    ("hate", "negative"),
    ("adore", "positive"),
    ("loathe", "negative"),
    ("enjoy", "positive"),
    ("dislike", "negative"),
]
ROWS = [
    {
        "messages": [
            {"role": "system", "content": "Classify the sentiment of the text."},
            {"role": "user", "content": f"[[ ## text ## ]]\nI {word} this movie."},
            {
                "role": "assistant",
                "content": f"[[ ## label ## ]]\n{label}\n\n[[ ## completed ## ]]",
            },
        ]
    }
    for word, label in WORDS
]
# 6 rows, 2 per micro-batch, 1 epoch: 3 optimizer steps.
CONFIG = FinetuneConfig(
    base_model="smollm2", epochs=1, batch_size=2, learning_rate=1e-3, checkpoint_every_steps=100
)


@pytest.fixture(scope="module")
def tokenizer():
    return model_store.load_tokenizer(model_store.resolve("smollm2"))


@pytest.fixture(scope="module")
def base_model():
    model = model_store.load_base_model(
        model_store.resolve("smollm2"), device="cpu", dtype=torch.float32
    )
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def artifacts(tmp_path_factory: pytest.TempPathFactory):
    """This module's fine-tuned ids are registered in a temporary directory."""
    path = tmp_path_factory.mktemp("artifacts")
    previous = model_store.artifacts_dir()
    model_store.configure(artifacts_dir=path)
    yield path
    model_store.configure(artifacts_dir=previous)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """One uninterrupted run, shared by the tests that inspect its outputs."""
    progress: list[TrainProgress] = []
    output_dir = tmp_path_factory.mktemp("run")
    result = ft.finetune(
        CONFIG,
        ROWS,
        output_dir=output_dir,
        model_id="bftweb:smollm2:ft-test",
        on_progress=progress.append,
    )
    return result, progress, output_dir


# --- tokenization -----------------------------------------------------------------------------


def test_labels_mask_exactly_the_prompt(tokenizer) -> None:
    row = ROWS[0]
    example, truncated = packing.tokenize_row(tokenizer, row, index=0, max_seq_length=1024)
    prompt = tokenizer.apply_chat_template(row["messages"][:-1], add_generation_prompt=True)[
        "input_ids"
    ]
    assert example is not None and not truncated
    assert example.input_ids[: len(prompt)] == list(prompt)
    assert example.labels[: len(prompt)] == [packing.IGNORE_INDEX] * len(prompt)
    assert example.labels[len(prompt) :] == example.input_ids[len(prompt) :]
    answer = tokenizer.decode(example.labels[len(prompt) :])
    assert answer == row["messages"][-1]["content"] + "<|im_end|>\n"
    # pad == eos for SmolLM2: the answer's closing <|im_end|> must be trained, not masked as padding.
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert tokenizer.eos_token_id in example.labels


def test_truncation_is_counted_and_answerless_rows_dropped(tokenizer) -> None:
    example, _ = packing.tokenize_row(tokenizer, ROWS[0], index=0, max_seq_length=1024)
    assert example is not None
    n_prompt = example.labels.count(packing.IGNORE_INDEX)
    data = packing.tokenize_rows(tokenizer, ROWS[:1], max_seq_length=n_prompt + 2)
    assert (data.truncated_rows, data.dropped_rows) == (1, 0)
    assert len(data.examples[0].input_ids) == n_prompt + 2
    assert data.examples[0].n_label_tokens == 2
    data = packing.tokenize_rows(tokenizer, ROWS, max_seq_length=1024)
    assert (data.truncated_rows, data.dropped_rows, len(data.examples)) == (0, 0, len(ROWS))
    with pytest.raises(ValueError, match="all 1 rows lost their answer"):
        packing.tokenize_rows(tokenizer, ROWS[:1], max_seq_length=n_prompt)


def test_prompt_not_a_prefix_names_the_row() -> None:
    class OddTemplate:
        def apply_chat_template(self, messages, add_generation_prompt, **kwargs):
            return {"input_ids": [1, 2, 3] if add_generation_prompt else [1, 9, 3, 4]}

    with pytest.raises(
        ValueError, match="row 7: the chat template's prompt tokens are not a prefix"
    ):
        packing.tokenize_row(OddTemplate(), ROWS[0], index=7, max_seq_length=64)


def test_pack_restarts_positions_and_shifts_within_each_sequence() -> None:
    a = packing.Example(input_ids=[10, 11, 12], labels=[-100, 11, 12])
    b = packing.Example(input_ids=[20, 21], labels=[-100, 21])
    batch = packing.pack([a, b])
    assert batch["input_ids"].tolist() == [[10, 11, 12, 20, 21]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    # token t predicts token t+1 of its own sequence; the last token of `a` predicts nothing.
    assert batch["keep"].tolist() == [[True, True, False, True, False]]
    assert batch["targets"].tolist() == [11, 12, 21]


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["sdpa", "eager", packing.PACKED_ATTENTION])
@SHARED
def test_packed_loss_equals_per_sequence_loss(tokenizer, base_model, attention: str) -> None:
    """Packing must not let a sequence see its neighbours: same loss as running each alone.

    sdpa/eager: transformers derives a block-diagonal mask from the restarting position ids;
    PACKED_ATTENTION (what training uses): causal attention per sequence slice.
    """
    examples = packing.tokenize_rows(tokenizer, ROWS[:3], max_seq_length=1024).examples
    with torch.no_grad():
        reference, n_reference = 0.0, 0
        for example in examples:  # plain HF path: one unpadded sequence, HF's own label shift
            n = example.n_label_tokens
            output = base_model(
                input_ids=torch.tensor([example.input_ids]), labels=torch.tensor([example.labels])
            )
            reference += output.loss.item() * n
            n_reference += n
        # the same concatenation without restarting positions does attend across sequences
        batch = packing.pack(examples)
        crossed = base_model(input_ids=batch["input_ids"], logits_to_keep=batch["keep"]).logits
        crossed_loss = torch.nn.functional.cross_entropy(
            crossed.reshape(-1, crossed.shape[-1]), batch["targets"], reduction="sum"
        )
        try:
            if attention == packing.PACKED_ATTENTION:
                packing.use_packed_attention(base_model)
            else:
                base_model.set_attn_implementation(attention)
            packed, n_packed = packing.packed_loss_sum(base_model, examples, device="cpu")
        finally:
            base_model.set_attn_implementation("sdpa")
    assert n_packed == n_reference
    assert packed.item() == pytest.approx(reference, rel=1e-4)
    assert abs(crossed_loss.item() - reference) > 1.0


# --- config, rows, plan -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("min_steps", 0),
        ("learning_rate", 0.0),
        ("batch_size", 0),
        ("gradient_accumulation_steps", 0),
        ("max_steps", 0),
        ("max_seq_length", 1),
        ("lora_r", 0),
        ("lora_dropout", 1.0),
        ("warmup_ratio", 1.5),
        ("target_modules", ()),
        ("max_grad_norm", -1.0),
    ],
)
def test_invalid_config_names_the_field(field: str, value: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=rf"FinetuneConfig\.{field} "):
        ft.finetune(
            replace(CONFIG, **{field: value}), ROWS, output_dir=tmp_path, model_id="bftweb:x:ft-1"
        )


@pytest.mark.slow
def test_unknown_target_module_lists_the_real_ones(tmp_path: Path) -> None:
    config = replace(CONFIG, target_modules=("q_proj", "query_key_value"))
    with pytest.raises(
        ValueError, match=r"target_modules: query_key_value not found.*k_proj, lm_head, o_proj"
    ):
        ft.finetune(config, ROWS, output_dir=tmp_path, model_id="bftweb:x:ft-1")


def test_bad_rows_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no training rows"):
        ft.finetune(CONFIG, [], output_dir=tmp_path, model_id="bftweb:x:ft-1")
    bad = [*ROWS[:2], {"messages": ROWS[0]["messages"][:-1]}]
    with pytest.raises(ValueError, match="row 2: the last message must be the assistant's answer"):
        ft.finetune(CONFIG, bad, output_dir=tmp_path, model_id="bftweb:x:ft-1")
    with pytest.raises(ValueError, match="model_id must start with 'bftweb:'"):
        ft.finetune(CONFIG, ROWS, output_dir=tmp_path, model_id="mine")


def test_plan_covers_every_row_each_epoch_and_caps_at_max_steps() -> None:
    config = replace(CONFIG, epochs=2, batch_size=2, gradient_accumulation_steps=2)
    steps = tp.plan_steps(7, config)  # 4 micro-batches per epoch -> 2 steps per epoch
    assert len(steps) == math.ceil(4 / 2) * 2
    for epoch in (0, 1):
        rows = [
            i
            for step in steps
            if step.epoch == epoch
            for micro in step.micro_batches
            for i in micro
        ]
        assert sorted(rows) == list(range(7))
    assert [s.micro_batches for s in steps] == [s.micro_batches for s in tp.plan_steps(7, config)]
    assert steps[0].micro_batches != steps[2].micro_batches  # reshuffled per epoch
    assert [s.epoch_position for s in steps] == [2, 4, 2, 4]
    assert len(tp.plan_steps(7, replace(config, max_steps=3))) == 3


def test_the_plan_raises_epochs_until_a_small_set_gets_its_minimum_steps() -> None:
    """The rule: with epochs unset, the fewest epochs that reach min_steps, within bounds."""
    config = FinetuneConfig(base_model="x")  # the defaults: auto epochs, 4 rows per step
    assert (config.epochs, config.min_steps, config.batch_size) == (None, 24, 4)
    plan = tp.training_plan(15, config)  # 4 steps per epoch (15 kept rows)
    assert (plan.steps_per_epoch, plan.epochs, plan.total_steps) == (4, 6, 24)
    assert plan.auto_epochs and not plan.warnings and not plan.too_few_steps
    plan = tp.training_plan(55, config)  # 14 per epoch: 2 epochs
    assert (plan.epochs, plan.total_steps) == (2, 28)
    plan = tp.training_plan(1000, config)  # a big set: one pass is plenty
    assert (plan.epochs, plan.total_steps) == (tp.AUTO_MIN_EPOCHS, 250)
    assert "250 steps per epoch x 1 epoch (auto: at least 24 steps)" in plan.describe()
    plan = tp.training_plan(6, config)  # 2 per epoch: capped at AUTO_MAX_EPOCHS, and said so
    assert (plan.epochs, plan.total_steps) == (tp.AUTO_MAX_EPOCHS, 20)
    assert plan.too_few_steps and "6 rows are too few" in plan.warnings[0]
    # accumulation counts: 15 rows, 2 per micro-batch, 2 micro-batches per step -> 4 per epoch
    plan = tp.training_plan(15, replace(config, batch_size=2, gradient_accumulation_steps=2))
    assert (plan.rows_per_step, plan.steps_per_epoch, plan.epochs) == (4, 4, 6)
    assert plan.warmup_steps == math.ceil(config.warmup_ratio * 24)


def test_explicit_epochs_and_max_steps_win_with_a_warning_when_too_few() -> None:
    config = FinetuneConfig(base_model="x", epochs=1)
    plan = tp.training_plan(15, config)
    assert (plan.epochs, plan.total_steps, plan.auto_epochs) == (1, 4, False)
    assert plan.warnings == (
        "only 4 optimizer steps, under 24: likely too few for the student to learn the answer "
        "format (leave epochs empty (auto) or set them to 6)",
    )
    plan = tp.training_plan(15, replace(config, epochs=None, max_steps=10))
    assert (plan.epochs, plan.total_steps) == (6, 10)
    assert "raise max steps" in plan.warnings[0] and "(max steps)" in plan.describe()
    assert tp.training_plan(15, replace(config, epochs=None, min_steps=4)).epochs == 1
    assert tp.training_plan(0, config).warnings == ("no training rows",)
    # plan_steps follows the plan exactly
    assert len(tp.plan_steps(15, FinetuneConfig(base_model="x"))) == 24
    assert len(tp.plan_steps(15, config)) == 4


def test_a_jobs_config_json_with_its_plan_loads_back() -> None:
    config = FinetuneConfig(base_model="x")
    plan = tp.training_plan(15, config).to_dict()
    assert plan["summary"].startswith("15 rows, 4 per step: 4 steps per epoch x 6 epochs")
    stored = {**config.to_dict(), FinetuneConfig.PLAN_KEY: plan}
    assert FinetuneConfig.from_dict(json.loads(json.dumps(stored))) == config


def test_lr_warms_up_then_decays_and_never_runs_at_zero() -> None:
    factors = [tp.lr_factor(s, total_steps=10, warmup_steps=2) for s in range(10)]
    assert factors[:3] == [0.5, 1.0, 1.0]
    assert factors == sorted(factors[:2]) + sorted(factors[2:], reverse=True)
    assert min(factors) > 0


# --- the real thing ---------------------------------------------------------------------------


@pytest.mark.slow
@SHARED
def test_finetune_trains_saves_and_registers(trained, tokenizer, base_model) -> None:
    result, progress, output_dir = trained
    assert (result.steps, result.total_steps, result.stopped_early) == (3, 3, False)
    assert [p.step for p in progress] == [1, 2, 3]
    assert [p.checkpoint_step for p in progress] == [0, 0, 0]  # every 100 steps: only the final one
    assert all(
        p.total_steps == 3 and math.isfinite(p.loss) and p.tokens_per_s > 0 for p in progress
    )
    assert progress[-1].epoch == pytest.approx(1.0)
    assert "step 1/3 loss" in progress[0].log and "0 truncated" in progress[0].log
    assert math.isfinite(result.final_loss)

    adapter = Path(result.adapter_dir)
    assert (adapter / "adapter_model.safetensors").exists() and (
        adapter / "tokenizer_config.json"
    ).exists()
    manifest = json.loads(Path(result.manifest_path).read_text())
    assert manifest["model_id"] == "bftweb:smollm2:ft-test" and manifest["base_model"] == "smollm2"
    assert manifest["data_hash"] == ft.data_hash(ROWS) and manifest["n_rows"] == len(ROWS)
    assert (
        manifest["steps"] == 3 and len(manifest["losses"]) == 3 and manifest["truncated_rows"] == 0
    )
    assert manifest["config"] == CONFIG.to_dict() and manifest["device"] == "cpu"
    plan = manifest["plan"]
    assert (plan["rows"], plan["epochs"], plan["total_steps"], plan["auto_epochs"]) == (
        6,
        1,
        3,
        False,
    )
    assert plan["warnings"] and "only 3 optimizer steps" in plan["warnings"][0]
    lines = (output_dir / "train.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == ROWS
    assert (output_dir / "checkpoint" / "state.pt").exists()

    resolved = model_store.resolve(result.model_id)
    assert resolved.adapter_dir == adapter

    import peft

    example, _ = packing.tokenize_row(tokenizer, ROWS[0], index=0, max_seq_length=1024)
    assert example is not None
    ids = torch.tensor([example.input_ids])
    with torch.no_grad():
        before = base_model(input_ids=ids).logits
        tuned = peft.PeftModel.from_pretrained(base_model, adapter).eval()
        after = tuned(input_ids=ids).logits
        assert not torch.allclose(before, after, atol=1e-3)
        prompt = tokenizer.apply_chat_template(
            ROWS[1]["messages"][:-1],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        generated = tuned.generate(**prompt, max_new_tokens=8, do_sample=False)
    text = tokenizer.decode(generated[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text.strip()
    tuned.unload()  # give the shared base model back without LoRA layers


@pytest.mark.slow
@SHARED
def test_stop_then_resume_continues_exactly(trained, tmp_path: Path) -> None:
    full_result, full_progress, _ = trained
    output_dir = tmp_path / "run"
    stopped = ft.finetune(
        CONFIG,
        ROWS,
        output_dir=output_dir,
        model_id="bftweb:smollm2:ft-stop",
        should_stop=lambda: True,
    )
    assert stopped.stopped_early and stopped.model_id == "" and stopped.steps == 1
    meta = json.loads((output_dir / "checkpoint" / "meta.json").read_text())
    assert (meta["step"], meta["epoch"], meta["epoch_position"]) == (1, 0, 1)
    assert not (output_dir / "adapter").exists()

    other_rows = [*ROWS[:-1], ROWS[0]]
    with pytest.raises(ValueError, match="trained on different rows"):
        ft.finetune(CONFIG, other_rows, output_dir=output_dir, model_id="bftweb:smollm2:ft-stop")
    with pytest.raises(ValueError, match=r"the config changed \(learning_rate: 0.001 -> 0.002\)"):
        ft.finetune(
            replace(CONFIG, learning_rate=2e-3),
            ROWS,
            output_dir=output_dir,
            model_id="bftweb:smollm2:ft-stop",
        )

    progress: list[TrainProgress] = []
    on_disk: list[int] = []

    def report(p: TrainProgress) -> None:
        progress.append(p)
        on_disk.append(json.loads((output_dir / "checkpoint" / "meta.json").read_text())["step"])

    resumed = ft.finetune(
        replace(CONFIG, checkpoint_every_steps=1),  # tolerated on resume; training is unchanged
        ROWS,
        output_dir=output_dir,
        model_id="bftweb:smollm2:ft-stop",
        on_progress=report,
    )
    assert [p.step for p in progress] == [2, 3]
    # A reported checkpoint is already on disk when the report arrives (the last step's is saved
    # after it, with the adapter).
    assert [p.checkpoint_step for p in progress] == on_disk == [2, 2]
    assert (resumed.steps, resumed.total_steps, resumed.stopped_early) == (3, 3, False)
    assert "resumed from step 1" in progress[0].log
    # the same trajectory as the uninterrupted run: order, optimizer state and dropout RNG restored
    assert [p.loss for p in progress] == pytest.approx(
        [p.loss for p in full_progress[1:]], rel=1e-4
    )
    manifest = json.loads(Path(resumed.manifest_path).read_text())
    assert manifest["resumed_from_step"] == 1 and len(manifest["losses"]) == 3


def test_a_checkpoint_written_before_a_field_existed_resumes_at_its_default(
    tmp_path: Path,
) -> None:
    from jobs.engine.checkpoints import check_resumable, config_for_resume

    config = FinetuneConfig(base_model="smollm2", epochs=2)
    older = config_for_resume(config)
    del older["min_steps"]  # a checkpoint from before min_steps
    check_resumable({"data_hash": "h", "config": older}, config, "h", tmp_path)
    with pytest.raises(ValueError, match=r"the config changed \(min_steps: 24 -> 8\)"):
        check_resumable(
            {"data_hash": "h", "config": older}, replace(config, min_steps=8), "h", tmp_path
        )
