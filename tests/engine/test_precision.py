"""Precision that fits the hardware: bf16 only where native and faster, fp32 anywhere else."""

from __future__ import annotations

import json

import pytest
import torch

from jobs.engine import finetune as ft
from jobs.engine import model_store, precision
from jobs.engine.precision import Precision, choose_precision
from jobs.engine.types import FinetuneConfig, TrainProgress

torch.set_num_threads(2)

AVX2_ONLY = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu vme sse sse2 avx fma avx2 bmi2
"""
AVX512_BF16 = """processor\t: 0
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse2 avx avx2 avx512f avx512_vnni avx512_bf16
"""
SAPPHIRE_RAPIDS = """model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""
ROWS = [
    {
        "messages": [
            {"role": "user", "content": f"[[ ## text ## ]]\nI {word} this movie."},
            {"role": "assistant", "content": f"[[ ## label ## ]]\n{label}"},
        ]
    }
    for word, label in (("love", "positive"), ("hate", "negative"))
]


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch):
    """No override from the environment, and no cached answer from another test (or this one)."""
    monkeypatch.delenv(precision.ENV_CPU_BF16, raising=False)
    precision._cpu_auto.cache_clear()
    yield
    precision._cpu_auto.cache_clear()


def fake_cpu(
    monkeypatch: pytest.MonkeyPatch, cpuinfo: str, probe: tuple[float, float]
) -> list[int]:
    """/proc/cpuinfo reads ``cpuinfo``; the probe returns ``probe`` (fp32 s, bf16 s) and counts."""
    calls: list[int] = []

    def time_probe() -> tuple[float, float]:
        calls.append(1)
        return probe

    monkeypatch.setattr(precision, "read_cpuinfo", lambda: cpuinfo)
    monkeypatch.setattr(precision, "_time_probe", time_probe)
    monkeypatch.setattr(precision, "torch_cpu_capability", lambda: "AVX512")
    return calls


# --- /proc/cpuinfo ----------------------------------------------------------------------------


def test_cpuinfo_flags_and_native_bf16() -> None:
    assert precision.cpu_flags(AVX2_ONLY) >= {"avx2", "fma"}
    assert precision.native_bf16_flags(precision.cpu_flags(AVX2_ONLY)) == []
    assert precision.native_bf16_flags(precision.cpu_flags(AVX512_BF16)) == ["avx512_bf16"]
    assert precision.native_bf16_flags(precision.cpu_flags(SAPPHIRE_RAPIDS)) == [
        "avx512_bf16",
        "amx_bf16",
    ]
    assert precision.cpu_flags("") == frozenset()
    assert precision.cpu_flags("model name\t: mystery\n") == frozenset()
    assert precision.cpu_model_name(AVX2_ONLY) == "AMD EPYC 7B12"


def test_describe_cpu_names_the_model_flags_and_torch_capability(monkeypatch) -> None:
    fake_cpu(monkeypatch, AVX2_ONLY, (1.0, 1.0))
    text = precision.describe_cpu()
    assert "AMD EPYC 7B12" in text
    assert "avx2" in text and "no avx512_bf16/amx_bf16" in text
    assert "torch CPU capability AVX512" in text


# --- the choice -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("on", Precision(True, "bf16: forced by BFT_CPU_BF16=on")),
        ("off", Precision(False, "fp32: forced by BFT_CPU_BF16=off")),
        (" OFF ", Precision(False, "fp32: forced by BFT_CPU_BF16=off")),
    ],
)
def test_env_forces_the_cpu_answer(monkeypatch, value: str, expected: Precision) -> None:
    calls = fake_cpu(monkeypatch, AVX2_ONLY if expected.bf16 else AVX512_BF16, (2.0, 1.0))
    monkeypatch.setenv("BFT_CPU_BF16", value)
    assert choose_precision("cpu", True) == expected
    assert calls == []  # forced: nothing is timed


def test_an_unknown_env_value_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("BFT_CPU_BF16", "maybe")
    with pytest.raises(ValueError, match="BFT_CPU_BF16 must be one of auto, on, off, not 'maybe'"):
        choose_precision("cpu", True)


def test_bf16_off_in_the_config_wins(monkeypatch) -> None:
    monkeypatch.setenv("BFT_CPU_BF16", "on")
    assert choose_precision("cpu", False) == Precision(
        False, "fp32: bf16 was turned off in the config"
    )


def test_no_native_bf16_means_fp32_without_timing(monkeypatch) -> None:
    calls = fake_cpu(monkeypatch, AVX2_ONLY, (9.0, 1.0))
    got = choose_precision("cpu", True)
    assert got == Precision(
        False,
        "fp32: this CPU has no native bf16 (no avx512_bf16/amx_bf16 flags; "
        "torch CPU capability AVX512)",
    )
    assert calls == []


def test_native_bf16_that_times_faster_is_chosen_and_timed_once(monkeypatch) -> None:
    calls = fake_cpu(monkeypatch, SAPPHIRE_RAPIDS, (3.0, 1.0))
    for _ in range(3):
        got = choose_precision("cpu", True)
    assert got == Precision(
        True,
        "bf16: native bf16 on this CPU (avx512_bf16, amx_bf16) and a timed check found it "
        "faster (3.0x fp32)",
    )
    assert len(calls) == 1  # cached for the process


def test_native_bf16_that_is_not_clearly_faster_stays_fp32(monkeypatch) -> None:
    calls = fake_cpu(monkeypatch, AVX512_BF16, (1.1, 1.0))
    got = choose_precision("cpu", True)
    assert not got.bf16
    assert got.reason.startswith(
        "fp32: native bf16 on this CPU (avx512_bf16) but a timed check found bf16 not clearly faster"
    )
    choose_precision("cpu", True)
    assert len(calls) == 1


def test_cuda_asks_torch(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert choose_precision("cuda", True) == Precision(True, "bf16: CUDA device supports it")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert not choose_precision("cuda", True).bf16
    assert not choose_precision("mps", True).bf16


def test_the_real_probe_times_both() -> None:
    fp32_s, bf16_s = precision._time_probe(repeats=1, iterations=1)
    assert fp32_s > 0 and bf16_s > 0


# --- where the choice is used -----------------------------------------------------------------


def test_autocast_follows_the_choice(monkeypatch) -> None:
    monkeypatch.setenv("BFT_CPU_BF16", "off")
    autocast, chosen = ft._autocast("cpu", True)
    with autocast():
        assert not torch.is_autocast_enabled("cpu")
    assert chosen.reason == "fp32: forced by BFT_CPU_BF16=off"
    monkeypatch.setenv("BFT_CPU_BF16", "on")
    autocast, chosen = ft._autocast("cpu", True)
    with autocast():
        assert torch.is_autocast_enabled("cpu")
    assert chosen.bf16


def test_inference_dtype_follows_the_choice_unless_set(monkeypatch) -> None:
    from jobs.engine.local_lm import _inference_dtype

    monkeypatch.delenv("BFT_INFERENCE_DTYPE", raising=False)
    monkeypatch.setenv("BFT_CPU_BF16", "off")
    assert _inference_dtype("cpu") is torch.float32
    monkeypatch.setenv("BFT_CPU_BF16", "on")
    assert _inference_dtype("cpu") is torch.bfloat16
    monkeypatch.setenv("BFT_INFERENCE_DTYPE", "float32")
    assert _inference_dtype("cpu") is torch.float32
    monkeypatch.delenv("BFT_INFERENCE_DTYPE")
    calls = fake_cpu(monkeypatch, AVX2_ONLY, (9.0, 1.0))
    monkeypatch.delenv("BFT_CPU_BF16")
    assert _inference_dtype("cpu") is torch.float32
    assert calls == []


@pytest.mark.slow
def test_a_finetune_records_its_precision(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("BFT_CPU_BF16", "off")
    previous = model_store.artifacts_dir()
    model_store.configure(artifacts_dir=tmp_path / "artifacts")
    progress: list[TrainProgress] = []
    try:
        result = ft.finetune(
            FinetuneConfig(base_model="smollm2", batch_size=2, max_steps=1),
            ROWS,
            output_dir=tmp_path / "run",
            model_id="bftweb:smollm2:ft-precision",
            on_progress=progress.append,
        )
    finally:
        model_store.configure(artifacts_dir=previous)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert result.steps == 1
    assert manifest["bf16"] is False
    assert manifest["precision"] == {"bf16": False, "reason": "fp32: forced by BFT_CPU_BF16=off"}
    assert "precision fp32: forced by BFT_CPU_BF16=off" in progress[0].log
