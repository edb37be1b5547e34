"""`manage.py distill` with its default settings, timed, then the dev accuracy of the teacher (its
chosen demos), the base student and the fine-tuned student on held-out rows.

    python -m bench bench.distill_defaults                  # the 4-label topics task
    python -m bench.distill_defaults --task intents         # the 3-label check task
    python -m bench.distill_defaults --run 3 --epochs 2     # retrain on run 3's passing traces

The data is jobs/demo/<task>.jsonl (the trainset: distill splits it 80/20 itself) and
<task>_dev.jsonl (held out: never seen by teacher search, bootstrap or training). distill runs in a
subprocess (``--sync``) against a scratch SQLite database, artifacts directory and Redis db 13
(override with BENCH_REDIS_URL), in fp32 unless BFT_CPU_BF16 is set (a CPU without native bf16).
With ``--run`` the bootstrap is reused and only the fine-tune runs again, in this process, with
the given overrides: how the training defaults were compared.

The accuracy here is this bench's own loop (the engine's bootstrap with no demos for the
students); the product's evaluation is jobs/services/evaluations.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "jobs" / "demo"
SCRATCH = Path(tempfile.gettempdir()) / "bftweb-bench-distill"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", f"sqlite:///{SCRATCH / 'db.sqlite3'}")
    env.setdefault("BFT_ARTIFACTS_DIR", str(SCRATCH / "artifacts"))
    env["REDIS_URL"] = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    env.setdefault("BFT_CPU_BF16", "off")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def _setup_django() -> None:
    os.environ.update({k: v for k, v in _env().items() if k not in os.environ or k == "REDIS_URL"})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bftweb.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)  # the scratch database follows the code


def load_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_distill(task: str, extra: list[str]) -> tuple[float, str]:
    """`manage.py distill` on the task with its defaults (plus ``extra``); (seconds, stdout)."""
    SCRATCH.mkdir(parents=True, exist_ok=True)
    env = _env()
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    project = f"bench-{task}-{int(time.time())}"
    command = [
        sys.executable,
        "manage.py",
        "distill",
        "--trainset",
        str(DEMO / f"{task}.jsonl"),
        "--program",
        str(DEMO / f"{task}_program.json"),
        "--project",
        project,
        "--sync",
        *extra,
    ]
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    print(done.stdout, flush=True)
    if done.returncode:
        print(done.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"distill failed after {seconds:.0f} s")
    return seconds, done.stdout


def phases(run_pk: int) -> str:
    """How long each phase of the distill took, from the rows' own start and end times."""
    from jobs.models import BootstrapRun, QueuedWork

    run = BootstrapRun.objects.get(pk=run_pk)
    rows: list[tuple[str, QueuedWork]] = [("bootstrap", run)]
    job = run.finetune_jobs.order_by("pk").first()
    if job is not None:
        rows.append(("fine-tune", job))
        evaluation = job.evaluations.order_by("pk").first()
        if evaluation is not None:
            rows.append(("closing evaluation", evaluation))
    return ", ".join(
        f"{name} {(row.finished - row.started).total_seconds() / 60:.1f}"
        for name, row in rows
        if row.started and row.finished
    )


def accuracy(
    spec: Any,
    model: str,
    rows: list[dict[str, Any]],
    metric: Any,
    *,
    demos: list[dict[str, Any]] | None = None,
    max_tokens: int = 256,
) -> dict[str, Any]:
    """How many of ``rows`` the program answers right with ``model`` (and these demos, in order)."""
    from jobs.engine.bootstrap import bootstrap
    from jobs.engine.types import BootstrapConfig, ModelSpec

    records: list[dict[str, Any]] = []
    started = time.monotonic()
    demos = demos or []
    bootstrap(
        program=spec,
        teacher=ModelSpec("local", model, max_tokens=max_tokens),
        examples=[{"index": i, "data": row} for i, row in enumerate(rows)],
        metric=metric,
        config=BootstrapConfig(num_threads=4, num_demos=len(demos)),
        demos=demos,
        demo_positions=list(range(len(demos))),
        on_trace=records.append,
    )
    answers: dict[str, int] = {}
    for r in records:
        key = str(r["outputs"].get(metric.field)) if r["parsed"] else "(unparsed)"
        answers[key] = answers.get(key, 0) + 1
    return {
        "passed": sum(1 for r in records if r["passed"]),
        "parsed": sum(1 for r in records if r["parsed"]),
        "rows": len(records),
        "seconds": time.monotonic() - started,
        "answers": dict(sorted(answers.items(), key=lambda kv: -kv[1])),
    }


def retrain(
    run_pk: int, overrides: dict[str, Any], max_label_share: float | None = None
) -> tuple[str, float, dict[str, Any]]:
    """Train the bundled student again on a run's passing traces (capped as freezing them with
    ``max_label_share`` would), with the default config and ``overrides``: (model id, seconds,
    plan)."""
    from jobs.engine.finetune import finetune
    from jobs.engine.model_store import BUNDLED_NAME, finetuned_model_id
    from jobs.engine.training_plan import training_plan
    from jobs.engine.types import FinetuneConfig
    from jobs.models import BootstrapRun
    from jobs.services import trace_sets

    run = BootstrapRun.objects.get(pk=run_pk)
    config = dataclasses.replace(FinetuneConfig(base_model=BUNDLED_NAME), **overrides)
    traces = list(run.traces.for_selection("passing").order_by("example_index"))
    if max_label_share is not None:
        field = run.metric_spec().field
        labelled = [
            (t.pk, trace_sets.trace_label(t.outputs, t.edited_outputs, field)) for t in traces
        ]
        kept, balance = trace_sets.select_capped(labelled, max_label_share, seed=config.seed)
        traces = [t for t in traces if t.pk in kept]
        print(f"label cap {max_label_share:g}: kept {dict(balance.counts)}", flush=True)
    rows = trace_sets.rows_from_records([trace_sets.trace_record(t) for t in traces])
    tag = f"r{run_pk}x{int(time.time())}"
    started = time.monotonic()
    result = finetune(
        config,
        rows,
        output_dir=SCRATCH / "retrain" / tag,
        model_id=finetuned_model_id(BUNDLED_NAME, tag),
        resume=False,
    )
    plan = training_plan(len(rows), config).to_dict()
    return result.model_id, time.monotonic() - started, plan


def report(task: str, run_pk: int, student_id: str, *, base: bool, teacher: bool = True) -> None:
    from jobs.models import BootstrapRun
    from jobs.services import runs

    run = BootstrapRun.objects.get(pk=run_pk)
    spec = run.program_version.to_spec()
    metric = run.metric_spec()
    dev = load_rows(DEMO / f"{task}_dev.jsonl")
    examples, demos, _skip = runs.bootstrap_inputs(run)
    positions = runs.chosen_demo_positions(
        run.demo_search, [example["index"] for example in examples]
    )
    if positions is None:  # random demos: the engine's seeded pick
        from jobs.engine.demos import pick_demos

        chosen = pick_demos(
            demos, run.bootstrap_config().num_demos, run.bootstrap_config().demo_seed
        )
    else:
        chosen = [demos[p] for p in positions]
    max_tokens = run.teacher.max_tokens
    candidates = [("teacher (its demos)", run.teacher.model_name, chosen)] if teacher else []
    if base:
        candidates.append(("base student (no demos)", "smollm2", []))
    candidates.append(("fine-tuned student (no demos)", student_id, []))
    print(
        f"\n== dev accuracy on {len(dev)} held-out {task} rows (metric {metric.name}:{metric.field})"
    )
    for name, model, use_demos in candidates:
        result = accuracy(spec, model, dev, metric, demos=use_demos, max_tokens=max_tokens)
        print(
            f"{name:32s} {result['passed']:3d}/{result['rows']} right, {result['parsed']} parsed, "
            f"{result['seconds']:.0f} s; answers {result['answers']}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.distill_defaults")
    parser.add_argument("--task", default="topics", choices=("topics", "intents"))
    parser.add_argument("--run", type=int, help="reuse this run's bootstrap: retrain only")
    parser.add_argument("--model", help="with --run: evaluate this fine-tuned id, no training")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--min-steps", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--target-modules", help="comma-separated")
    parser.add_argument("--max-label-share", type=float, help="with --run: cap one label's share")
    parser.add_argument("--no-base", action="store_true", help="skip the base student")
    parser.add_argument("--no-teacher", action="store_true", help="skip the teacher")
    parser.add_argument("distill_args", nargs="*", help="passed to distill (after --)")
    args = parser.parse_args(argv)

    load = os.getloadavg()
    print(
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs; "
        f"BFT_CPU_BF16={_env()['BFT_CPU_BF16']}",
        flush=True,
    )
    if args.run is None:
        seconds, out = run_distill(args.task, args.distill_args)
        _setup_django()
        found_model = re.search(r"model id: (\S+)", out)
        found_run = re.search(r"^run (\d+):", out, re.MULTILINE)
        if not (found_model and found_run):
            raise SystemExit("could not read the model id and run from distill's output")
        print(
            f"distill: {seconds / 60:.1f} minutes wall clock "
            f"({phases(int(found_run.group(1)))} minutes)",
            flush=True,
        )
        report(args.task, int(found_run.group(1)), found_model.group(1), base=not args.no_base)
        return
    _setup_django()
    overrides: dict[str, Any] = {}
    for name, value in (
        ("epochs", args.epochs),
        ("min_steps", args.min_steps),
        ("learning_rate", args.lr),
        ("batch_size", args.batch_size),
    ):
        if value is not None:
            overrides[name] = value
    if args.target_modules:
        overrides["target_modules"] = tuple(args.target_modules.split(","))
    if args.model:
        model_id = args.model
    else:
        model_id, seconds, plan = retrain(args.run, overrides, args.max_label_share)
        print(f"retrained {overrides}: {plan['summary']} in {seconds / 60:.1f} min", flush=True)
    report(args.task, args.run, model_id, base=not args.no_base, teacher=not args.no_teacher)


if __name__ == "__main__":
    main()
