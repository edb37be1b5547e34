"""The model server under load: requests/s and latency (p50, p95) at concurrency 1, 8 and 32.

What it sets up: a fresh SQLite database (a temp dir) with one project, a read-only API key, the
bundled SmolLM2 and ``--students`` fine-tuned students of it (LoRA adapters with random weights:
speed does not depend on what they learned), then ``manage.py serve`` on 127.0.0.1 twice: with
continuous batching (``--max-batch 32``) and one request at a time (``--max-batch 1``), the
baseline. Each request asks for ``--max-tokens`` tokens of a story (greedy), over HTTP, as clients
would.

1. The base model at concurrency 1, 8 and 32, on both servers.
2. ``--students`` students, 8 requests each, all in flight at once in mixed-adapter batches,
   against serving each student separately (one student's requests batched, then the next's:
   what one merged copy per student, or switching adapters between batches, gives).

Usage: ``python -m bench.serve_speed [--max-tokens 32] [--students 4]`` (runs itself in a child
process; the servers' logs are kept in ``var/bench-serve-<max batch>.log``). Bounded: 160 requests
of ``--max-tokens`` tokens, about 3 to 8 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.status_poll import ROOT, environment, free_port

PROMPT = "Write a long story about a dragon who learns to bake bread."
ROUNDS = {1: 4, 8: 16, 32: 32}  # concurrency -> requests sent


def make_adapters(where: Path, count: int) -> list[Path]:
    """``count`` LoRA adapters of SmolLM2 with random (non-zero) weights, saved as peft saves them."""
    import peft
    import torch

    from jobs.engine import model_store

    resolved = model_store.resolve("smollm2")
    paths = []
    for i in range(count):
        torch.manual_seed(i)
        base = model_store.load_base_model(resolved, device="cpu", dtype=torch.float32)
        config = peft.LoraConfig(
            r=16,
            lora_alpha=32,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            init_lora_weights=False,  # random A and B: each adapter changes the answers
        )
        model = peft.get_peft_model(base, config)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.mul_(0.01)  # small: the answers stay text
        path = where / f"adapter-{i}"
        model.save_pretrained(str(path))
        paths.append(path)
    return paths


def seed(students: int, where: Path) -> tuple[str, list[str]]:
    """Migrate and create the rows; returns (API key, the students' model ids)."""
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from jobs.engine import model_store
    from jobs.engine.types import MetricSpec
    from jobs.models import (
        BootstrapRun,
        FinetuneJob,
        LanguageModel,
        Membership,
        Program,
        Project,
        Trainset,
    )
    from jobs.services import api_keys
    from jobs.services.model_policy import project_owner_key

    call_command("migrate", verbosity=0, interactive=False)
    user = User.objects.create_user("bench", password="bench-password-1")
    project = Project.objects.create(name="bench", slug="bench")
    Membership.objects.create(project=project, user=user, role="owner")
    _, key = api_keys.create_api_key(project=project, user=user, name="bench", scope="read")
    base = LanguageModel.objects.create(project=project, name="smollm2", model_name="smollm2")
    trainset = Trainset.objects.create(project=project, name="t", status="ready", created_by=user)
    program = Program.objects.create(project=project, name="p", created_by=user)
    version = program.versions.create(
        version=1,
        created_by=user,
        spec={"name": "p", "modules": [{"name": "m", "type": "Predict", "signature": "a -> b"}]},
    )
    run = BootstrapRun.objects.create(
        project=project,
        trainset=trainset,
        program_version=version,
        teacher=base,
        created_by=user,
        metric=MetricSpec("exact_match", "b").to_dict(),
    )
    ids = []
    for i, path in enumerate(make_adapters(where, students)):
        model_id = f"bftweb:smollm2:ft-bench-{i}"
        job = FinetuneJob.objects.create(
            project=project,
            run=run,
            student=base,
            status=FinetuneJob.Status.SUCCEEDED,
            output_model_id=model_id,
            created_by=user,
        )
        LanguageModel.objects.create(
            project=project, name=f"student {i}", model_name=model_id, source_job=job
        )
        model_store.register_finetuned(
            model_id,
            base_model="smollm2",
            adapter_dir=path,
            manifest={},
            owner=project_owner_key(project),
        )
        ids.append(model_id)
    return key, ids


def ask(port: int, key: str, model: str, max_tokens: int) -> tuple[float, int]:
    """One chat completion over HTTP: (latency s, completion tokens)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
    )
    started = time.perf_counter()
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    answer = json.loads(response.read())
    latency = time.perf_counter() - started
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {answer}")
    return latency, int(answer["usage"]["completion_tokens"])


def load(
    port: int, key: str, models: list[str], concurrency: int, max_tokens: int
) -> dict[str, float]:
    """Send one request per entry of ``models``, ``concurrency`` at a time."""
    results: list[tuple[float, int]] = []
    todo = list(models)
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                if not todo:
                    return
                model = todo.pop()
            result = ask(port, key, model, max_tokens)
            with lock:
                results.append(result)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(min(concurrency, len(models)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    latencies = sorted(r[0] for r in results)
    tokens = sum(r[1] for r in results)
    return {
        "requests": len(results),
        "wall": wall,
        "rps": len(results) / wall,
        "tokens_s": tokens / wall,
        "p50": statistics.median(latencies),
        "p95": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
    }


def start_server(env: dict[str, str], port: int, max_batch: int, log: Path) -> Any:
    with log.open("ab") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "serve",
                "--port",
                str(port),
                "--max-batch",
                str(max_batch),
                "--batch-window-ms",
                "10",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {log.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/v1/models")
            if conn.getresponse().status == 401:
                return server
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the model server did not answer")


def row(label: str, figures: dict[str, float]) -> str:
    return (
        f"{label:<40}{figures['requests']:>5.0f}{figures['rps']:>8.2f}{figures['tokens_s']:>9.1f}"
        f"{figures['p50']:>8.2f}{figures['p95']:>8.2f}"
    )


HEADER = f"{'':<40}{'reqs':>5}{'req/s':>8}{'tok/s':>9}{'p50 s':>8}{'p95 s':>8}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.serve_speed", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--students", type=int, default=4)
    parser.add_argument("--here", action="store_true", help="run in this process (the child)")
    args = parser.parse_args(argv)
    if not args.here:
        given = sys.argv[1:] if argv is None else argv
        cmd = [sys.executable, "-m", "bench.serve_speed", *given, "--here"]
        subprocess.run(cmd, cwd=ROOT, check=True)
        return

    with tempfile.TemporaryDirectory(prefix="bftweb-bench-serve-") as tmp_name:
        tmp = Path(tmp_name)
        env = {**environment(tmp), "BFT_ARTIFACTS_DIR": str(tmp / "artifacts")}
        env.setdefault("BFT_MODEL_CACHE_DIR", str(ROOT / "var" / "model-cache"))
        os.environ.update(env)
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        key, students = seed(args.students, tmp)
        mt = args.max_tokens
        print(
            f"model server, SmolLM2-135M greedy, {mt} new tokens a request, over HTTP "
            f"(device {device()})"
        )
        print(HEADER)
        for max_batch, label in ((32, "continuous batch"), (1, "one at a time")):
            port = free_port()
            server = start_server(env, port, max_batch, tmp / f"serve-{max_batch}.log")
            try:
                ask(port, key, "smollm2", 2)  # load the model
                for concurrency, n in ROUNDS.items():
                    figures = load(port, key, ["smollm2"] * n, concurrency, mt)
                    print(row(f"base, {label}, concurrency {concurrency}", figures), flush=True)
                if max_batch == 32:
                    for model in students:
                        ask(port, key, model, 2)  # load every adapter
                    per = 8
                    mixed = [m for _ in range(per) for m in students]
                    together = load(port, key, mixed, len(mixed), mt)
                    print(
                        row(f"{len(students)} students mixed, one batch", together),
                        flush=True,
                    )
                    parts = [load(port, key, [m] * per, per, mt) for m in students]
                    wall = sum(p["wall"] for p in parts)
                    separately = {
                        "requests": sum(p["requests"] for p in parts),
                        "wall": wall,
                        "rps": sum(p["requests"] for p in parts) / wall,
                        "tokens_s": sum(p["tokens_s"] * p["wall"] for p in parts) / wall,
                        "p50": statistics.median(p["p50"] for p in parts),
                        "p95": max(p["p95"] for p in parts),
                    }
                    print(row(f"{len(students)} students one after another", separately))
                    print(
                        f"  mixed-adapter batches / each student separately: "
                        f"{together['rps'] / separately['rps']:.2f}x requests/s; memory: one "
                        f"base copy instead of {len(students)} merged ones"
                    )
            finally:
                server.terminate()
                server.wait(30)
                keep = ROOT / "var" / f"bench-serve-{max_batch}.log"
                keep.parent.mkdir(exist_ok=True)
                keep.write_bytes((tmp / f"serve-{max_batch}.log").read_bytes())


def device() -> str:
    from jobs.engine.model_store import pick_device

    return pick_device()


if __name__ == "__main__":
    main()
