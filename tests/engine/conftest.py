"""Engine test fixtures: the demo sentiment task (data + program) shipped in jobs/demo/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[2] / "jobs" / "demo"


@pytest.fixture(scope="session")
def demo_rows() -> list[dict]:
    return [
        json.loads(line)
        for line in (DEMO / "sentiment.jsonl").read_text().splitlines()
        if line.strip()
    ]


@pytest.fixture(scope="session")
def demo_spec():
    from jobs.engine.programs import parse_program_spec

    return parse_program_spec((DEMO / "sentiment_program.json").read_text())


@pytest.fixture(scope="session")
def demo_examples(demo_rows) -> list[dict]:
    return [{"index": i, "data": row} for i, row in enumerate(demo_rows)]
