"""Which precision training and inference run in: bf16 only where the hardware makes it pay.

On a CPU without native bf16 (AVX2 only), bf16 autocast is emulated and a LoRA step ran 21x
slower than in fp32 (6.5 vs 135 tokens/s on 2 AVX2 cores). So on CPU bf16 is chosen only
where /proc/cpuinfo lists a native bf16 instruction set (``avx512_bf16`` or ``amx_bf16``) AND a
small timed probe, run once per process, finds bf16 autocast clearly faster than fp32. Anywhere
else: fp32. ``BFT_CPU_BF16=on|off`` forces the CPU answer (``auto``, the default, checks).
On CUDA the answer is ``torch.cuda.is_bf16_supported()``.

Plain Python: torch is imported inside the functions that need it.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_CPU_BF16 = "BFT_CPU_BF16"
CPU_BF16_CHOICES = ("auto", "on", "off")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# cpuinfo flags worth naming in describe_cpu(): the vector ISAs torch's CPU kernels dispatch on.
NOTABLE_FLAGS = ("avx2", "avx512f", "avx512_vnni", *NATIVE_BF16_FLAGS, "amx_tile")
# bf16 must beat fp32 by this factor in the probe, or fp32 runs (noise on shared cores).
MIN_SPEEDUP = 1.2
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Precision:
    """Whether bf16 autocast runs, and a one-line reason for the job's log and manifest."""

    bf16: bool
    reason: str

    def to_dict(self) -> dict[str, bool | str]:
        return {"bf16": self.bf16, "reason": self.reason}


def choose_precision(device: str, requested_bf16: bool) -> Precision:
    """bf16 where it was asked for and the device runs it natively (and, on CPU, faster)."""
    if not requested_bf16:
        return Precision(False, "fp32: bf16 was turned off in the config")
    if device == "cuda":
        import torch

        if torch.cuda.is_bf16_supported():
            return Precision(True, "bf16: CUDA device supports it")
        return Precision(False, "fp32: this CUDA device does not support bf16")
    if device != "cpu":
        return Precision(False, f"fp32: bf16 autocast is not used on {device}")
    override = cpu_bf16_override()
    if override == "on":
        return Precision(True, f"bf16: forced by {ENV_CPU_BF16}=on")
    if override == "off":
        return Precision(False, f"fp32: forced by {ENV_CPU_BF16}=off")
    with _auto_lock:  # two threads asking at once must not time the probe against each other
        return _cpu_auto()


def cpu_bf16_override() -> str:
    """``BFT_CPU_BF16``: auto (unset or empty), on or off; anything else is a ValueError."""
    value = os.getenv(ENV_CPU_BF16, "").strip().lower() or "auto"
    if value not in CPU_BF16_CHOICES:
        raise ValueError(
            f"{ENV_CPU_BF16} must be one of {', '.join(CPU_BF16_CHOICES)}, not {value!r}"
        )
    return value


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo's text (its first ``flags`` line; x86)."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cpu_model_name(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "model name":
            return value.strip()
    return "unknown CPU"


def native_bf16_flags(flags: frozenset[str]) -> list[str]:
    """The native bf16 instruction sets among ``flags``, in NATIVE_BF16_FLAGS order."""
    return [flag for flag in NATIVE_BF16_FLAGS if flag in flags]


def read_cpuinfo() -> str:
    """/proc/cpuinfo's text, or "" where there is none (then no native bf16 is assumed)."""
    try:
        return CPUINFO.read_text(errors="replace")
    except OSError:
        return ""


def torch_cpu_capability() -> str:
    """The vector ISA torch's CPU kernels dispatch to (e.g. AVX2, AVX512), as torch names it."""
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # an older or unusual build: say so rather than fail the job
        return "unknown"


def describe_cpu() -> str:
    """One line on this host's CPU for the bench: model, cores, the flags that matter, torch's ISA."""
    text = read_cpuinfo()
    flags = cpu_flags(text)
    present = [flag for flag in NOTABLE_FLAGS if flag in flags]
    missing = [flag for flag in NATIVE_BF16_FLAGS if flag not in flags]
    flags_note = " ".join(present) or "none of " + " ".join(NOTABLE_FLAGS)
    if missing:
        flags_note += f" (no {'/'.join(missing)})"
    return (
        f"CPU {cpu_model_name(text)}, {os.cpu_count()} cores; flags: {flags_note}; "
        f"torch CPU capability {torch_cpu_capability()}"
    )


_auto_lock = threading.Lock()


@functools.cache
def _cpu_auto() -> Precision:
    """The CPU's answer under ``auto``: decided (and the probe timed) once per process."""
    capability = torch_cpu_capability()
    native = native_bf16_flags(cpu_flags(read_cpuinfo()))
    if not native:
        return Precision(
            False,
            f"fp32: this CPU has no native bf16 (no {'/'.join(NATIVE_BF16_FLAGS)} flags; "
            f"torch CPU capability {capability})",
        )
    fp32_s, bf16_s = _time_probe()
    speedup = fp32_s / bf16_s if bf16_s > 0 else 0.0
    has = f"native bf16 on this CPU ({', '.join(native)})"
    if speedup >= MIN_SPEEDUP:
        return Precision(
            True, f"bf16: {has} and a timed check found it faster ({speedup:.1f}x fp32)"
        )
    return Precision(
        False,
        f"fp32: {has} but a timed check found bf16 not clearly faster "
        f"({speedup:.2f}x fp32, {MIN_SPEEDUP}x needed)",
    )


def _time_probe(repeats: int = 3, iterations: int = 4) -> tuple[float, float]:
    """Seconds for a LoRA-like workload in fp32 and under CPU bf16 autocast (best of ``repeats``).

    A few frozen 512x512 linears (fp32 weights, as LoRA's base weights: autocast recasts them
    every forward) on an input that needs its gradient: forward under the autocast, backward
    after it, as the training loop does. The two are timed in turns, so a neighbour's load on
    shared cores falls on both.
    """
    import contextlib

    import torch

    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(512, 512, generator=generator) / 23.0 for _ in range(4)]
    source = torch.randn(256, 512, generator=generator)

    def step(bf16: bool) -> None:
        x = source.clone().requires_grad_(True)
        context = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with context:
            h = x
            for weight in weights:
                h = torch.nn.functional.linear(h, weight).relu()
            loss: Any = h.float().sum()
        loss.backward()

    def seconds(bf16: bool) -> float:
        started = time.perf_counter()
        for _ in range(iterations):
            step(bf16)
        return time.perf_counter() - started

    step(False)  # warm-up: kernel selection, allocator
    step(True)
    best = {False: float("inf"), True: float("inf")}
    for _ in range(repeats):
        for bf16 in (False, True):
            best[bf16] = min(best[bf16], seconds(bf16))
    return best[False], best[True]
