"""Server time and queries of the review pages with 100k traces in one run (SQLite, DEBUG=False).

A fresh child process builds a scratch SQLite database: one run with N ChainOfThought traces of
realistic size (inputs, labels, outputs, and per call the signature, two demos and the rendered
chat messages: ≈ 2.5 KB of JSON per trace), bulk-created, with a realistic review state (a third
decided through TraceDecision rows, a few edits, traces assigned to three reviewers). Then it
times each page through Django's test client (the full request: middleware, view, queries,
template) and counts its queries with CaptureQueriesContext.

Usage: ``python -m bench.review_pages [--traces N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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
    "battery",
    "screen",
    "delivery",
    "price",
    "support",
    "refund",
    "sturdy",
    "flimsy",
    "bright",
    "dull",
    "comfortable",
    "heavy",
    "light",
    "works",
    "stopped",
]


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def build(n: int, seed: int = 0) -> dict[str, Any]:
    """The scratch database: cast, run, n traces, decisions. Returns ids the timings need."""
    import dspy
    from django.contrib.auth.models import User
    from django.db import transaction

    from jobs.engine.training_data import call_messages, signature_to_dict
    from jobs.engine.types import MetricSpec
    from jobs.models import (
        BootstrapRun,
        LanguageModel,
        Membership,
        Program,
        ProgramVersion,
        Project,
        Trace,
        TraceDecision,
        Trainset,
    )

    rng = random.Random(seed)
    project = Project.objects.create(name="bench", slug="bench")
    users = {}
    for name, role in (
        ("alice", "owner"),
        ("bob", "operator"),
        ("rita", "reviewer"),
        ("victor", "viewer"),
    ):
        users[name] = User.objects.create_user(name)
        Membership.objects.create(project=project, user=users[name], role=role)
    alice = users["alice"]
    trainset = Trainset.objects.create(
        project=project, name="reviews", row_count=n, status="ready", created_by=alice
    )
    program = Program.objects.create(project=project, name="sentiment", created_by=alice)
    version = ProgramVersion.objects.create(
        program=program,
        version=1,
        created_by=alice,
        spec={
            "name": "sentiment",
            "modules": [
                {"name": "classify", "type": "ChainOfThought", "signature": "text -> sentiment"}
            ],
        },
    )
    teacher = LanguageModel.objects.create(
        project=project, name="teacher", model_name="smollm2", created_by=alice
    )
    run = BootstrapRun.objects.create(
        project=project,
        trainset=trainset,
        program_version=version,
        teacher=teacher,
        created_by=alice,
        metric=MetricSpec("token_f1", "sentiment", 0.5).to_dict(),
        total=n,
        done=n,
        status="succeeded",
    )

    # One call rendered by DSPy's adapter; the others reuse its messages with their own strings
    # (rendering 100k calls through dspy would time the adapter, not the pages).
    signature = signature_to_dict(
        dspy.ChainOfThought("text -> sentiment").predict.signature.with_instructions(
            "Classify the sentiment."
        )
    )
    marker = {
        "text": "\x00TEXT\x00",
        "reasoning": "\x00REASONING\x00",
        "sentiment": "\x00LABEL\x00",
    }
    template = call_messages(
        {
            "signature": signature,
            "inputs": {"text": marker["text"]},
            "outputs": {"reasoning": marker["reasoning"], "sentiment": marker["sentiment"]},
        }
    )

    def messages(text: str, reasoning: str, label: str) -> list[dict[str, str]]:
        out = []
        for m in template:
            content = (
                m["content"].replace(marker["text"], text).replace(marker["reasoning"], reasoning)
            )
            out.append({"role": m["role"], "content": content.replace(marker["sentiment"], label)})
        return out

    labels = ["positive", "negative", "neutral"]
    demos = [{"text": _text(rng, 15, 30), "sentiment": rng.choice(labels)} for _ in range(2)]
    batch: list[Trace] = []
    started = time.monotonic()
    with transaction.atomic():
        for i in range(n):
            text = f"review {i}: {_text(rng, 20, 60)}"
            label = rng.choice(labels)
            errored = rng.random() < 0.03
            output = label if rng.random() < 0.8 else rng.choice(labels)
            reasoning = (
                "Not supplied for this particular example."
                if rng.random() < 0.02
                else f"The review mentions {_text(rng, 8, 25)}, so it reads {output}."
            )
            score = 0.0 if errored else (1.0 if output == label else round(rng.random() * 0.6, 3))
            call = {
                "predictor": "classify.predict",
                "signature": signature,
                "inputs": {"text": text},
                "outputs": {} if errored else {"reasoning": reasoning, "sentiment": output},
                "demos": demos,
                "error": "the answer did not parse" if errored else "",
                "messages": [] if errored else messages(text, reasoning, output),
            }
            if errored:
                call["raw"] = f"[[ ## reasoning ## ]]\n{reasoning}\n[[ ## sentim"
            batch.append(
                Trace(
                    run=run,
                    example_index=i,
                    inputs={"text": text},
                    labels={"sentiment": label},
                    outputs={} if errored else {"sentiment": output},
                    calls=[call],
                    score=score,
                    passed=not errored and score >= 0.5,
                    parsed=not errored,
                    error="the answer did not parse: ..." if errored else "",
                    lm_calls=1,
                    tokens=rng.randint(300, 600),
                    elapsed_s=round(rng.random() * 3, 2),
                )
            )
            if len(batch) == 2000:
                Trace.objects.bulk_create(batch)
                batch = []
        Trace.objects.bulk_create(batch)
    created_s = time.monotonic() - started

    # Review state: a third of the traces decided (history rows + state), some edits, assignments.

    from jobs.services import review

    started = time.monotonic()
    rita, bob = users["rita"], users["bob"]
    review.bulk_decide(
        run=run,
        user=rita,
        traces=run.traces.filter(example_index__lt=n // 4, passed=True),
        verdict="approve",
    )
    review.bulk_decide(
        run=run,
        user=bob,
        traces=run.traces.filter(example_index__lt=n // 3).exclude(error=""),
        verdict="reject",
    )
    edits = []
    for trace in run.traces.filter(example_index__lt=n // 3, passed=False, error="")[:200]:
        edits.append(
            TraceDecision(
                run=run,
                trace=trace,
                user=rita,
                verdict="edit",
                edited_outputs={"sentiment": trace.labels["sentiment"]},
            )
        )
    TraceDecision.objects.bulk_create(edits)
    for d in edits:
        Trace.objects.filter(pk=d.trace_id).update(edited_outputs=d.edited_outputs, edited=True)
    review.assign_evenly(run=run, user=alice)
    reviewed_s = time.monotonic() - started
    json_bytes = (
        sum(
            len(json.dumps(t.calls))
            + len(json.dumps(t.inputs))
            + len(json.dumps(t.outputs))
            + len(json.dumps(t.labels))
            for t in run.traces.only("calls", "inputs", "outputs", "labels")[:500]
        )
        / 500
    )
    return {
        "run": run.pk,
        "created_s": created_s,
        "reviewed_s": reviewed_s,
        "json_bytes": json_bytes,
        "decisions": TraceDecision.objects.count(),
        "sample": list(run.traces.order_by("?").values_list("pk", flat=True)[:50]),
        "unreviewed": list(
            run.traces.filter(review_state="unreviewed")
            .order_by("?")
            .values_list("pk", flat=True)[:50]
        ),
    }


def measure(
    client: Any, url: str | list[str], repeat: int, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    urls = url if isinstance(url, list) else [url]
    for u in urls[:2]:  # warm: template loading, first-query caches
        r = client.get(u, headers=headers or {})
        assert r.status_code == 200, (u, r.status_code)
    times = []
    queries = []
    for i in range(repeat):
        u = urls[i % len(urls)]
        with CaptureQueriesContext(connection) as ctx:
            started = time.perf_counter()
            r = client.get(u, headers=headers or {})
            if hasattr(r, "streaming_content"):
                b"".join(r.streaming_content)
            times.append((time.perf_counter() - started) * 1000)
        assert r.status_code == 200, (u, r.status_code)
        queries.append(len(ctx.captured_queries))
    times.sort()
    return {
        "median_ms": statistics.median(times),
        "p95_ms": times[min(len(times) - 1, round(0.95 * (len(times) - 1)))],
        "queries": max(queries),
        "min_queries": min(queries),
    }


def child(n: int, repeat: int) -> dict[str, Any]:
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client

    call_command("migrate", verbosity=0)
    from jobs.models import BootstrapRun

    saved = Path(os.environ["BFT_VAR_DIR"]) / "bench-info.json"
    if saved.exists() and BootstrapRun.objects.exists():  # --keep: reuse the database built before
        info = json.loads(saved.read_text())
    else:
        info = build(n)
        saved.write_text(json.dumps(info))
    run = info["run"]
    client = Client()
    client.force_login(User.objects.get(username="rita"))
    base = f"/p/bench/runs/{run}/review/"
    pages: dict[str, str | list[str]] = {
        "queue, no filter": base,
        "queue, page 1000": f"{base}?page=1000",
        "queue, unreviewed": f"{base}?state=unreviewed",
        "queue, passed 0.5–0.9": f"{base}?outcome=passed&min=0.5&max=0.9",
        "queue, edited": f"{base}?state=edited",
        "queue, assigned to me": f"{base}?mine=1&state=unreviewed",
        "queue, text search": f"{base}?q=refund+sturdy",
        "counts fragment": f"{base}counts/",
        "threshold panel": f"{base}threshold/?full=1&t=0.5",
        "trace detail": [f"{base}{pk}/" for pk in info["sample"]],
        "trace detail, unreviewed queue": [
            f"{base}{pk}/?state=unreviewed" for pk in info["unreviewed"]
        ],
    }
    results = {}
    for name, url in pages.items():
        results[name] = measure(
            client, url, repeat, headers={"HX-Request": "true"} if "fragment" in name else None
        )
    # One decision through the page (htmx), on distinct unreviewed traces.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    times, queries = [], []
    for pk in info["unreviewed"][: max(repeat, 5)]:
        with CaptureQueriesContext(connection) as ctx:
            started = time.perf_counter()
            r = client.post(
                f"{base}{pk}/decide/?state=unreviewed",
                {"verdict": "approve"},
                headers={"HX-Request": "true"},
            )
            times.append((time.perf_counter() - started) * 1000)
        assert r.status_code == 200
        queries.append(len(ctx.captured_queries))
    times.sort()
    results["approve (htmx POST)"] = {
        "median_ms": statistics.median(times),
        "p95_ms": times[min(len(times) - 1, round(0.95 * (len(times) - 1)))],
        "queries": max(queries),
        "min_queries": min(queries),
    }
    return {
        "info": {k: v for k, v in info.items() if k not in ("sample", "unreviewed")},
        "pages": results,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.review_pages")
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument(
        "--keep", type=Path, help="keep the scratch database in this directory (and reuse it)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.traces, args.repeat)))
        return
    with tempfile.TemporaryDirectory(prefix="bft-review-bench-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bftweb.settings",
            "DEBUG": "False",
            "SECRET_KEY": os.environ.get("SECRET_KEY", "bench-only-not-secret"),
            "SECURE_SSL_REDIRECT": "False",
            "ALLOWED_HOSTS": "testserver,localhost",
            "DATABASE_URL": f"sqlite:///{workdir / 'review.sqlite3'}",
            "BFT_VAR_DIR": str(workdir),
            "BFT_ARTIFACTS_DIR": str(workdir / "artifacts"),
            "LOG_LEVEL": "WARNING",
        }
        cmd = [
            sys.executable,
            "-m",
            "bench.review_pages",
            "--child",
            "--traces",
            str(args.traces),
            "--repeat",
            str(args.repeat),
        ]
        out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
        data = json.loads(out.stdout.strip().splitlines()[-1])
        size = (workdir / "review.sqlite3").stat().st_size / 2**20
    info = data["info"]
    print(
        f"{args.traces:,} traces in one run (≈ {info['json_bytes'] / 1024:.1f} KB JSON each; SQLite file {size:.0f} MiB), "
        f"built in {info['created_s']:.0f} s; {info['decisions']:,} decisions (bulk, {info['reviewed_s']:.1f} s); "
        f"DEBUG=False; {args.repeat} requests per page through Django's test client"
    )
    print(f"{'page':<34} {'median ms':>10} {'p95 ms':>8} {'queries':>8}")
    for name, r in data["pages"].items():
        q = (
            str(r["queries"])
            if r["queries"] == r["min_queries"]
            else f"{r['min_queries']}–{r['queries']}"
        )
        print(f"{name:<34} {r['median_ms']:>10.1f} {r['p95_ms']:>8.1f} {q:>8}")


if __name__ == "__main__":
    main()
