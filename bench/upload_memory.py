"""Peak memory of a 100k-row trainset upload through jobs/services/trainsets.py (validate + import, SQLite).

Each measurement runs in a fresh child process (so torch or models loaded by other benches do
not blur the figures), with DEBUG=False as in production (DEBUG=True keeps every SQL string):

- ``sync``: what a web request does when it imports in-process (validate, then write in one
  transaction): RSS growth of the process and the tracemalloc peak of Python allocations.
- ``worker``: the background path for large uploads (the request only counts lines and copies
  the file; ``run_trainset_import`` validates and imports on a worker).

Usage: ``python -m bench.upload_memory [--rows N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = [
    "good",
    "bad",
    "great",
    "awful",
    "fine",
    "slow",
    "fast",
    "broken",
    "lovely",
    "terrible",
    "cheap",
    "solid",
    "noisy",
    "quiet",
]


def write_jsonl(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 40)))
            label = "positive" if i % 2 else "negative"
            f.write(json.dumps({"id": i, "text": f"review {i}: {text}", "sentiment": label}) + "\n")


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(path: Path, mode: str, trace: bool) -> dict[str, float]:
    """Runs inside a fresh process whose environment points Django at a scratch SQLite DB."""
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.files.uploadedfile import TemporaryUploadedFile
    from django.core.management import call_command
    from django.test import override_settings

    from jobs.models import Project, Trainset, TrainsetImport
    from jobs.services import trainsets
    from jobs.tasks import run_trainset_import

    call_command("migrate", verbosity=0)
    user = User.objects.create_user("bench")
    project = Project.objects.create(name="bench", slug="bench")
    size = path.stat().st_size

    # Warm up imports and query paths on a tiny file, so the figures are the import's own.
    tiny = path.with_suffix(".tiny.jsonl")
    tiny.write_bytes(b"".join(path.open("rb").readline() for _ in range(1)))
    with override_settings(BFT_TRAINSET_ASYNC_ROWS=10**9):
        trainsets.import_upload(
            project=project,
            user=user,
            upload=_upload(tiny, TemporaryUploadedFile),
            name="warm",
            fmt="jsonl",
            skip_bad_rows=False,
            dev_ratio=0.2,
            split_seed=0,
        )

    if trace:
        import tracemalloc

        tracemalloc.start()
    rss_before, peak_before = current_rss_mib(), max_rss_mib()
    started = time.monotonic()
    if mode == "sync":
        upload = _upload(path, TemporaryUploadedFile)
        with override_settings(BFT_TRAINSET_ASYNC_ROWS=10**9):
            outcome = trainsets.import_upload(
                project=project,
                user=user,
                upload=upload,
                name="big",
                fmt="jsonl",
                skip_bad_rows=False,
                dev_ratio=0.2,
                split_seed=0,
            )
        assert outcome.trainset is not None, outcome.errors[:3]
        trainset = outcome.trainset
    else:
        trainset = Trainset.objects.create(
            project=project, name="big", file_name=path.name, fmt="jsonl", created_by=user
        )
        work = TrainsetImport.objects.create(
            trainset=trainset, path=str(_copy(path)), created_by=user
        )
        result = run_trainset_import(work.pk)
        assert result == "ready", Trainset.objects.get(pk=trainset.pk).error
    elapsed = time.monotonic() - started
    figures = {
        "rows": Trainset.objects.get(pk=trainset.pk).rows.count(),
        "file_mib": size / 2**20,
        "seconds": elapsed,
        "rss_growth_mib": current_rss_mib() - rss_before,
        "peak_rss_growth_mib": max_rss_mib() - peak_before,
        "peak_rss_mib": max_rss_mib(),
    }
    if trace:
        import tracemalloc

        figures["tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return figures


def _upload(path: Path, cls: type) -> object:
    """A TemporaryUploadedFile holding ``path``'s bytes, as Django's upload handler leaves it."""
    upload = cls(path.name, "application/jsonl", path.stat().st_size, "utf-8")
    with open(path, "rb") as src:
        while chunk := src.read(1 << 20):
            upload.write(chunk)
    upload.flush()
    upload.seek(0)
    return upload


def _copy(path: Path) -> Path:
    """The upload as the web request leaves it for the worker: a copy in the shared directory."""
    target = path.with_suffix(".queued.jsonl")
    with open(path, "rb") as a, open(target, "wb") as b:
        while chunk := a.read(1 << 20):
            b.write(chunk)
    return target


def run_child(path: Path, mode: str, trace: bool, workdir: Path) -> dict[str, float]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bftweb.settings",
        "DEBUG": "False",
        "SECRET_KEY": os.environ.get("SECRET_KEY", "bench-only-not-secret"),
        "SECURE_SSL_REDIRECT": "False",
        "DATABASE_URL": f"sqlite:///{workdir / f'{mode}-{int(trace)}.sqlite3'}",
        "BFT_VAR_DIR": str(workdir),
        "BFT_ARTIFACTS_DIR": str(workdir / "artifacts"),
        "BFT_UPLOAD_MAX_ROWS": str(10**7),
        "BFT_UPLOAD_MAX_BYTES": str(2**31),
        "LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "bench.upload_memory", "--child", str(path), "--mode", mode]
    if trace:
        cmd.append("--trace")
    out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.upload_memory")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="sync", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.mode, args.trace)))
        return

    with tempfile.TemporaryDirectory(prefix="bft-upload-bench-") as tmp:
        workdir = Path(tmp)
        path = workdir / "big.jsonl"
        write_jsonl(path, args.rows)
        print(
            f"trainset: {args.rows:,} rows, {path.stat().st_size / 2**20:.1f} MiB JSONL; SQLite; DEBUG=False"
        )
        for mode in ("sync", "worker"):
            rss = run_child(path, mode, False, workdir)
            traced = run_child(path, mode, True, workdir)
            print(
                f"{mode:>6}: {rss['rows']:,} rows imported in {rss['seconds']:.1f} s; "
                f"peak RSS growth {rss['peak_rss_growth_mib']:.1f} MiB (process peak {rss['peak_rss_mib']:.0f} MiB); "
                f"tracemalloc peak {traced['tracemalloc_peak_mib']:.1f} MiB"
            )


if __name__ == "__main__":
    main()
