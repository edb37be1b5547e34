"""Evaluation examples/s: 8 threads sharing the local engine's continuous batch vs one at a time.

Same model (the bundled SmolLM2, greedy), same program (the demo ChainOfThought, zero-shot, as a
fine-tuned student is evaluated), same 16 dev rows; the only difference is how many rows are in
flight. Per-row scores must not depend on it much: both runs' pass counts are printed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "jobs" / "demo"
ROWS = 16


def run(threads: int) -> tuple[float, int, float]:
    from jobs.engine.evaluate import evaluate
    from jobs.engine.local_lm import get_loaded_model
    from jobs.engine.programs import parse_program_spec
    from jobs.engine.types import MetricSpec, ModelSpec

    data = [json.loads(line) for line in (DEMO / "sentiment.jsonl").read_text().splitlines()]
    spec = parse_program_spec((DEMO / "sentiment_program.json").read_text())
    rows = [{"index": i, "data": row} for i, row in enumerate(data)][-ROWS:]
    model = ModelSpec("local", "smollm2", max_tokens=96)
    loaded = get_loaded_model("smollm2", batch_window_s=0.02, max_batch=16)
    loaded.generate(
        [{"role": "user", "content": "warm up"}], max_new_tokens=4, temperature=0.0, stop=()
    )
    latencies: list[float] = []
    started = time.perf_counter()
    totals = evaluate(
        program=spec,
        model=model,
        rows=rows,
        metric=MetricSpec("normalized_match", "sentiment"),
        threads=threads,
        on_result=lambda r: latencies.append(r["latency_s"]),
    )
    elapsed = time.perf_counter() - started
    return totals.done / elapsed, totals.passed, sorted(latencies)[len(latencies) // 2]


def main(argv: list[str] | None = None) -> None:
    from jobs.engine.model_store import pick_device

    print(f"\n== evaluation speed: {ROWS} rows, zero-shot, device {pick_device()} ==")
    batched, batched_passed, batched_p50 = run(threads=8)
    single, single_passed, single_p50 = run(threads=1)
    print(f"{'rows in flight':<18}{'examples/s':>12}{'p50 s/row':>12}{'passed':>8}")
    print(f"{'8 (shared batch)':<18}{batched:>12.3f}{batched_p50:>12.2f}{batched_passed:>8}")
    print(f"{'1 (one at a time)':<18}{single:>12.3f}{single_p50:>12.2f}{single_passed:>8}")
    print(f"ratio 8 threads / 1: {batched / single:.2f}x")


if __name__ == "__main__":
    main()
