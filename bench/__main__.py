"""``python -m bench`` runs every bench module in BENCHES; ``python -m bench NAME ...`` only those.

To add a bench: write ``bench/<name>.py`` with ``main(argv: list[str] | None = None) -> None``
that prints its figures, and append ``"bench.<name>"`` to BENCHES.
"""

from __future__ import annotations

import importlib
import sys
import time

BENCHES = [
    "bench.train_speed",
    "bench.bootstrap_speed",
    "bench.evaluation_speed",
    "bench.best_of_n",
    "bench.upload_memory",
    "bench.review_pages",
    "bench.evaluation_page",
    "bench.status_poll",
    "bench.api_status",
    "bench.serve_speed",
    "bench.distill_defaults",  # a whole distill and three evaluations: the longest, last
]


def main(argv: list[str] | None = None) -> int:
    names = (sys.argv[1:] if argv is None else argv) or BENCHES
    unknown = [name for name in names if name not in BENCHES]
    if unknown:
        print(
            f"unknown bench(es): {', '.join(unknown)}; known: {', '.join(BENCHES)}", file=sys.stderr
        )
        return 2
    from jobs.engine.precision import describe_cpu

    print(describe_cpu(), flush=True)  # the host the figures below come from
    for name in names:
        print(f"== {name}", flush=True)
        started = time.monotonic()
        importlib.import_module(name).main([])
        print(f"== {name} done in {time.monotonic() - started:.0f} s\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
