"""The smoke test: a run bootstraps a small stratified sample first and stops "checked" when it
looks broken, before the rest is spent.

Broken means: the pass rate is under BFT_SMOKE_MIN_PASS_RATE, most answers did not parse, or one
answer is given for more than COLLAPSE_SHARE of the sample (while the gold labels are not that
one-sided). The figures and a forecast for the whole run (kept traces with an interval, LM calls,
tokens, time from the measured throughput, cost where LiteLLM knows the price) are stored on the
run (``BootstrapRun.smoke``) for its page and for ``distill``.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from django.conf import settings

from jobs.engine.comparison import COLLAPSE_SHARE, answer_key, wilson_interval
from jobs.engine.demos import stratified_demo_sets

MOST_UNPARSED = 0.5  # more than this share of the sample unparsed: broken


def sample_examples(
    examples: Sequence[dict[str, Any]], label_field: str, size: int, seed: int
) -> list[dict[str, Any]]:
    """``size`` examples stratified over the gold values of ``label_field`` (every label in the
    sample when there are few), deterministic by ``seed``."""
    if size <= 0 or not examples:
        return []
    rows = [example["data"] for example in examples]
    sets = stratified_demo_sets(rows, label_field, min(size, len(rows)), 1, seed)
    return [examples[p] for p in sorted(sets[0])] if sets else []


def figures(
    records: Sequence[dict[str, Any]],
    *,
    label_field: str,
    total: int,
    elapsed_s: float,
    price: tuple[float | None, float | None] = (None, None),
) -> dict[str, Any]:
    """The sample's figures, the forecast for ``total`` examples, and the problems found."""
    n = len(records)
    passed = sum(1 for r in records if r["passed"])
    parsed = sum(1 for r in records if r["parsed"])
    answers = Counter(answer_key(r["outputs"].get(label_field)) for r in records if r["parsed"])
    gold = Counter(answer_key(r["labels"].get(label_field)) for r in records)
    top, top_count = answers.most_common(1)[0] if answers else ("", 0)
    low, high = wilson_interval(passed, n)
    per_example = {
        key: statistics.fmean(r.get(key, 0) for r in records) if n else 0.0
        for key in ("lm_calls", "tokens", "tokens_in", "tokens_out")
    }
    rate = n / elapsed_s if elapsed_s > 0 else None
    price_in, price_out = price
    cost = None
    if price_in is not None and price_out is not None:
        cost = total * (per_example["tokens_in"] * price_in + per_example["tokens_out"] * price_out)
    result = {
        "sample": n,
        "passed": passed,
        "parsed": parsed,
        "pass_rate": passed / n if n else 0.0,
        "top_answer": top,
        "top_share": top_count / parsed if parsed else 0.0,
        "gold_share": gold[top] / n if n else 0.0,
        "answers": answers.most_common(8),
        "forecast": {
            "examples": total,
            "kept": round(total * passed / n) if n else 0,
            "kept_low": round(total * low),
            "kept_high": round(total * high),
            "lm_calls": round(total * per_example["lm_calls"]),
            "tokens": round(total * per_example["tokens"]),
            "time_s": round(total / rate) if rate else None,
            "cost": cost,
        },
    }
    result["problems"] = problems(result)
    return result


def problems(figures: dict[str, Any]) -> list[str]:
    """Why the sample says the run is broken, one sentence each; [] when it looks sound."""
    n = figures["sample"]
    if not n:
        return []
    found = []
    min_rate = float(settings.BFT_SMOKE_MIN_PASS_RATE)
    if figures["pass_rate"] < min_rate:
        found.append(
            f"only {figures['passed']} of {n} sample answers passed the metric "
            f"({figures['pass_rate']:.0%}, under {min_rate:.0%})"
        )
    unparsed = n - figures["parsed"]
    if unparsed / n > MOST_UNPARSED:
        found.append(f"{unparsed} of {n} sample answers did not parse")
    if (
        figures["parsed"] >= 5
        and figures["top_share"] > COLLAPSE_SHARE
        and figures["gold_share"] <= COLLAPSE_SHARE
    ):
        found.append(
            f"the teacher answered {figures['top_answer']!r} for "
            f"{figures['top_share']:.0%} of the sample, while {figures['gold_share']:.0%} of its "
            "gold labels are that: it ignores the input"
        )
    return found
