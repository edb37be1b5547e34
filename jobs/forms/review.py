"""Review forms: a trace's output fields as a reviewer edits them, typed back from the post."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jobs.models import Trace
from jobs.models.runs import effective_outputs


def parse_field_value(raw: str, type_name: str) -> Any:
    """A form value as the signature's field type (ValueError names the problem)."""
    raw = raw.replace("\r\n", "\n")
    if type_name == "str":
        return raw
    text = raw.strip()
    if type_name == "int":
        return int(text)
    if type_name == "float":
        number = float(text)
        if not math.isfinite(number):
            raise ValueError(f"{text!r} is not a finite number")
        return number
    if type_name == "bool":
        if text.lower() in ("true", "yes", "1"):
            return True
        if text.lower() in ("false", "no", "0"):
            return False
        raise ValueError(f"{text!r} is not true or false")
    if type_name == "list[str]":
        if text.startswith("["):
            value = json.loads(text)
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise ValueError("expected a JSON list of strings")
            return value
        return [line.strip() for line in text.splitlines() if line.strip()]
    raise ValueError(f"unsupported field type {type_name}")


def format_field_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    return json.dumps(value)


@dataclass
class EditableField:
    name: str
    type: str
    original: Any
    current: Any
    predictors: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return format_field_value(self.current)

    @property
    def is_edited(self) -> bool:
        return self.current != self.original


def editable_fields(trace: Trace) -> list[EditableField]:
    """Each output field of the trace's parsed calls once (a name produced by two calls edits both)."""
    fields: dict[str, EditableField] = {}
    for call in trace.calls:
        if call.get("error"):
            continue
        for spec in call["signature"]["outputs"]:
            name = spec["name"]
            if name in fields:
                fields[name].predictors.append(call.get("predictor", ""))
                continue
            original = call["outputs"].get(name)
            fields[name] = EditableField(
                name,
                spec["type"],
                original,
                effective_outputs(call["outputs"], trace.edited_outputs).get(name),
                [call.get("predictor", "")],
            )
    return list(fields.values())


def edits_from_post(trace: Trace, data: Mapping[str, Any]) -> dict[str, Any]:
    """The posted ``field:<name>`` values that differ from the teacher's outputs, typed."""
    edits: dict[str, Any] = {}
    problems = []
    for f in editable_fields(trace):
        key = f"field:{f.name}"
        if key not in data:
            continue
        try:
            value = parse_field_value(str(data[key]), f.type)
        except (ValueError, json.JSONDecodeError) as e:
            problems.append(f"{f.name}: {e}")
            continue
        if value != f.original:
            edits[f.name] = value
    if problems:
        raise ValueError("; ".join(problems))
    return edits
