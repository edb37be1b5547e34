"""DSPy parity: the unchanged dspy.BootstrapFinetune fine-tunes a bftweb local student.

The teacher here is DSPy's own DummyLM answering with the gold labels: DSPy 3.4.1's compile
crashes on unparseable teacher answers, and the bundled 135M model, zero-shot, gives plenty. Everything else is real: the student is the bundled SmolLM2, trained with our LoRA loop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dspy
import pytest
from dspy.utils.dummies import DummyLM

from jobs.engine.local_lm import LocalEngine, get_loaded_model, make_lm
from jobs.engine.metrics import make_dspy_metric
from jobs.engine.program_module import build_program
from jobs.engine.training_data import chat_adapter
from jobs.engine.types import MetricSpec, ModelSpec

LOAD_AND_ASK = """
import json, sys
import dspy
from jobs.engine.program_module import build_program
from jobs.engine.programs import parse_program_spec
spec = parse_program_spec(json.loads(sys.argv[1]))
program = build_program(spec)
program.load(sys.argv[2], allow_unsafe_lm_state=True)
lm = program.classify.predict.lm
print(json.dumps({"model": lm.model, "answer": lm("Is 'I love it' positive or negative?")[0]}))
"""


@pytest.mark.slow
def test_unchanged_bootstrap_finetune_compiles_a_bftweb_student(
    demo_spec, demo_rows, artifacts_dir, tmp_path
):
    student = build_program(demo_spec)
    student.set_lm(make_lm(ModelSpec("local", "smollm2", max_tokens=48)))
    teacher = build_program(demo_spec)
    teacher.set_lm(
        DummyLM(
            {
                r["text"]: {
                    "reasoning": f"The review is {r['sentiment']}.",
                    "sentiment": r["sentiment"],
                }
                for r in demo_rows
            }
        )
    )
    trainset = [dspy.Example(**r).with_inputs("text") for r in demo_rows[:6]]
    optimizer = dspy.BootstrapFinetune(
        metric=make_dspy_metric(MetricSpec("exact_match", "sentiment")),
        train_kwargs={
            "max_steps": 2,
            "batch_size": 2,
            "job_name": "compile-test",
            "output_dir": str(tmp_path / "ft"),
            "bf16": False,
        },
        exclude_demos=True,
    )
    with dspy.context(adapter=chat_adapter()):
        compiled = optimizer.compile(student, trainset=trainset, teacher=teacher)

    lm = compiled.classify.predict.lm
    assert lm.model == "bftweb:smollm2:ft-compile-test"
    assert isinstance(lm.engine, LocalEngine) and lm.engine.model_name == lm.model
    assert (tmp_path / "ft" / "adapter" / "adapter_config.json").exists()
    rows = [json.loads(line) for line in (tmp_path / "ft" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and rows[0]["messages"][-1]["role"] == "assistant"
    # The compiled program answers with the fine-tuned weights (base + merged adapter).
    answer = lm("Is 'I love it' positive or negative?")[0]
    assert isinstance(answer, str)
    assert get_loaded_model(lm.model).model is not get_loaded_model("smollm2").model

    path = tmp_path / "program.json"
    compiled.save(str(path))
    env = {**os.environ, "BFT_ARTIFACTS_DIR": str(artifacts_dir)}
    out = subprocess.run(
        [sys.executable, "-c", LOAD_AND_ASK, json.dumps(demo_spec.to_dict()), str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded["model"] == "bftweb:smollm2:ft-compile-test"
    assert isinstance(loaded["answer"], str)
