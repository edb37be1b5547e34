"""What a worker computes on, described without importing torch (the worker's parent must not).

GPUs come from ``nvidia-smi`` (restricted to ``CUDA_VISIBLE_DEVICES`` when it is set), the CPU
from ``/proc``. The worker stores the description in its own RQ worker hash at birth
(``jobs/worker.py``), and the jobs page reads it back with the workers' heartbeats.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

# A field of rq's own "rq:worker:<name>" hash: it expires with the worker.
REDIS_FIELD = "bft_device"


def _visible(index: str, uuid: str) -> bool:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return True
    wanted = {v.strip() for v in visible.split(",") if v.strip()}
    return (
        index in wanted
        or uuid in wanted
        or any(uuid.startswith(w) for w in wanted if w.startswith("GPU-"))
    )


def nvidia_gpus(timeout: float = 10.0) -> list[dict[str, Any]]:
    """[{"index", "name", "memory_mib"}] of the GPUs this process may use; [] without nvidia-smi."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    try:
        out = subprocess.run(
            [binary, "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4 or not _visible(parts[0], parts[1]):
            continue
        try:
            memory = int(float(parts[3]))
        except ValueError:
            memory = 0
        gpus.append({"index": parts[0], "name": parts[2], "memory_mib": memory})
    return gpus


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def describe_device() -> dict[str, Any]:
    """{"kind": "cuda" | "cpu", "label": "...", ...}: what the jobs page shows for a worker."""
    gpus = nvidia_gpus()
    if gpus:
        names = [f"{g['name']} ({g['memory_mib'] / 1024:.0f} GiB)" for g in gpus]
        label = names[0] if len(names) == 1 else f"{len(names)} GPUs: " + ", ".join(names)
        return {"kind": "cuda", "label": label, "gpus": gpus}
    memory = _memory_gib()
    ram = f", {memory:.0f} GiB RAM" if memory else ""
    return {
        "kind": "cpu",
        "label": f"CPU: {_cpu_name()} ({_cores()} cores{ram})",
        "cores": _cores(),
    }


def parse_device(raw: bytes | str | None) -> dict[str, Any]:
    """The stored description back, or {} when the worker did not record one."""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
