"""The bundled classification sets (jobs/demo/generate.py): reproducible, balanced, no dev row
in the train file, and programs that fit them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from jobs.demo import generate
from jobs.engine.programs import parse_program_spec

DEMO = Path(generate.__file__).resolve().parent


@pytest.mark.parametrize("task", generate.TASKS, ids=lambda task: task.name)
def test_the_committed_files_are_what_the_generator_writes(
    task: generate.Task, tmp_path: Path
) -> None:
    for path in generate.write_task(task, tmp_path):
        assert path.read_text() == (DEMO / path.name).read_text(), path.name


@pytest.mark.parametrize("task", generate.TASKS, ids=lambda task: task.name)
def test_each_label_has_its_share_and_dev_rows_are_held_out(task: generate.Task) -> None:
    train, dev = generate.make_task(task)
    labels = set(task.families)
    assert Counter(row[task.label_field] for row in train) == dict.fromkeys(
        labels, task.per_label_train
    )
    assert Counter(row[task.label_field] for row in dev) == dict.fromkeys(
        labels, task.per_label_dev
    )
    assert not {row[task.input_field] for row in train} & {row[task.input_field] for row in dev}
    spec = parse_program_spec(json.dumps(task.program))
    assert spec.input_fields == (task.input_field,)
    assert task.label_field in spec.output_fields
    assert (len(train), len(dev)) == {"topics": (64, 32), "intents": (48, 24)}[task.name]
