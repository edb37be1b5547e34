"""Bootstrap examples/s at 8 threads: micro-batched generation vs one request at a time.

Same teacher (the bundled SmolLM2), same program (the demo ChainOfThought with 4 labeled demos),
same 16 examples, greedy decoding; the only difference is the local engine's batching policy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "jobs" / "demo"
THREADS = 8
EXAMPLES = 16


def run(max_batch: int, batch_window_s: float) -> tuple[float, int, int]:
    from jobs.engine.bootstrap import bootstrap_with_lm
    from jobs.engine.local_lm import get_loaded_model, make_lm
    from jobs.engine.programs import parse_program_spec
    from jobs.engine.types import BootstrapConfig, MetricSpec, ModelSpec

    rows = [json.loads(line) for line in (DEMO / "sentiment.jsonl").read_text().splitlines()]
    spec = parse_program_spec((DEMO / "sentiment_program.json").read_text())
    examples = [{"index": i, "data": row} for i, row in enumerate(rows)][8 : 8 + EXAMPLES]
    lm = make_lm(
        ModelSpec("local", "smollm2", max_tokens=96),
        max_batch=max_batch,
        batch_window_s=batch_window_s,
    )
    loaded = get_loaded_model("smollm2", batch_window_s=batch_window_s, max_batch=max_batch)
    loaded.generate(
        [{"role": "user", "content": "warm up"}], max_new_tokens=4, temperature=0.0, stop=()
    )
    prefills_before = loaded.decoder.prefills
    records: list[dict] = []
    started = time.perf_counter()
    bootstrap_with_lm(
        program=spec,
        lm=lm,
        examples=examples,
        metric=MetricSpec("normalized_match", "sentiment"),
        config=BootstrapConfig(num_threads=THREADS, num_demos=4),
        demos=rows[:8],
        on_trace=records.append,
    )
    elapsed = time.perf_counter() - started
    return (
        len(records) / elapsed,
        loaded.decoder.prefills - prefills_before,
        sum(r["passed"] for r in records),
    )


def main(argv: list[str] | None = None) -> None:
    from jobs.engine.model_store import pick_device

    print(
        f"\n== bootstrap speed: {EXAMPLES} examples, {THREADS} threads, device {pick_device()} =="
    )
    batched, batched_calls, batched_passed = run(max_batch=16, batch_window_s=0.02)
    single, single_calls, single_passed = run(max_batch=1, batch_window_s=0.0)
    print(f"{'policy':<28}{'examples/s':>12}{'prefill passes':>16}{'passed':>8}")
    print(f"{'continuous batch (<=16)':<28}{batched:>12.3f}{batched_calls:>16}{batched_passed:>8}")
    print(f"{'one request at a time':<28}{single:>12.3f}{single_calls:>16}{single_passed:>8}")
    print(f"ratio batched / one-at-a-time: {batched / single:.2f}x")


if __name__ == "__main__":
    main()
