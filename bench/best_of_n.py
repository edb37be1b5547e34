"""Best-of-N on a weak teacher: kept (passing) traces with retries vs a single attempt.

The bundled SmolLM2-135M as the teacher of the demo sentiment task, 4 labeled demos, the same 24
examples twice: once with one attempt each (DSPy's BootstrapFewShot default, max_rounds=1), once
with up to 2 retries at temperature 0.7 for a failing answer. Printed: passing traces, LM calls,
and wall time of each.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "jobs" / "demo"
EXAMPLES = 24
THREADS = 8


def run(retries: int) -> tuple[int, int, float]:
    from jobs.engine.bootstrap import bootstrap
    from jobs.engine.programs import parse_program_spec
    from jobs.engine.types import BootstrapConfig, MetricSpec, ModelSpec

    rows = [json.loads(line) for line in (DEMO / "sentiment.jsonl").read_text().splitlines()]
    spec = parse_program_spec((DEMO / "sentiment_program.json").read_text())
    examples = [{"index": i, "data": row} for i, row in enumerate(rows)][8 : 8 + EXAMPLES]
    started = time.perf_counter()
    progress = bootstrap(
        program=spec,
        teacher=ModelSpec("local", "smollm2", max_tokens=96),
        examples=examples,
        metric=MetricSpec("normalized_match", "sentiment"),
        config=BootstrapConfig(num_threads=THREADS, num_demos=4, retries=retries),
        demos=rows[:8],
        on_trace=lambda trace: None,
    )
    return progress.passed, progress.lm_calls, time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    print(f"\n== best-of-N: {EXAMPLES} examples, bundled teacher, {THREADS} threads ==")
    run(0)  # warm up: the model loads once
    single = run(0)
    best = run(2)
    print(f"{'attempts':<26}{'kept traces':>12}{'LM calls':>10}{'seconds':>9}")
    print(f"{'1 (single attempt)':<26}{single[0]:>12}{single[1]:>10}{single[2]:>9.1f}")
    print(f"{'up to 3 (2 retries @0.7)':<26}{best[0]:>12}{best[1]:>10}{best[2]:>9.1f}")
    print(f"kept traces: {best[0] - single[0]:+d} with retries")


if __name__ == "__main__":
    main()
