"""Fine-tuning rows from stored traces, identical to what DSPy's ``BootstrapFinetune`` builds.

A stored trace keeps, per predictor call, the signature as plain data (field names, types,
descriptions, prefixes, instructions), the call's inputs and outputs, and the predictor's demos.
From that, :func:`build_training_rows` re-creates the signature and calls the same
``ChatAdapter.format_finetune_data`` that ``BootstrapFinetune._prepare_finetune_data`` calls, in the
same order, with the same seeded shuffle. Reviewer edits go through :func:`rerender_trace`, so an
edited output is rendered by the very same adapter.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import dspy

# The field types a program spec may declare (jobs/engine/programs.py) plus what DSPy adds.
_TYPES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "list[str]": list[str],
}
_TYPE_NAMES = {v: k for k, v in _TYPES.items()}


def chat_adapter() -> dspy.ChatAdapter:
    """The adapter bftweb renders and parses with (no JSON fallback: it doubles LM calls)."""
    return dspy.ChatAdapter(use_json_adapter_fallback=False)


def signature_to_dict(signature: type[dspy.Signature]) -> dict[str, Any]:
    def fields(items: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for name, info in items.items():
            extra = info.json_schema_extra or {}
            annotation = info.annotation
            if annotation not in _TYPE_NAMES:
                raise ValueError(f"field {name!r}: type {annotation!r} cannot be stored in a trace")
            out.append(
                {
                    "name": name,
                    "type": _TYPE_NAMES[annotation],
                    "desc": extra.get("desc", ""),
                    "prefix": extra.get("prefix", ""),
                }
            )
        return out

    return {
        "instructions": signature.instructions,
        "inputs": fields(signature.input_fields),
        "outputs": fields(signature.output_fields),
    }


def signature_from_dict(data: dict[str, Any]) -> type[dspy.Signature]:
    spec: dict[str, Any] = {}
    for kind, make in (("inputs", dspy.InputField), ("outputs", dspy.OutputField)):
        for field in data[kind]:
            spec[field["name"]] = (
                _TYPES[field["type"]],
                make(desc=field["desc"], prefix=field["prefix"]),
            )
    signature: type[dspy.Signature] = dspy.Signature(spec, data["instructions"])
    return signature


def call_messages(
    call: dict[str, Any], *, exclude_demos: bool = True, adapter: dspy.Adapter | None = None
) -> list[dict[str, str]]:
    """The chat messages one predictor call trains on (``build_call_data_from_trace``'s result)."""
    adapter = adapter or chat_adapter()
    demos = [] if exclude_demos else [dspy.Example(**d) for d in call.get("demos", [])]
    data = adapter.format_finetune_data(
        signature=signature_from_dict(call["signature"]),
        demos=demos,
        inputs=call["inputs"],
        outputs=call["outputs"],
    )
    messages: list[dict[str, str]] = data["messages"]
    return messages


def build_training_rows(
    traces: list[dict[str, Any]],
    *,
    multitask: bool = True,
    exclude_demos: bool = True,
    predictor_index: int | None = None,
) -> list[dict[str, Any]]:
    """Chat rows for the given traces, as ``BootstrapFinetune._prepare_finetune_data`` makes them.

    The caller chooses the traces (DSPy keeps those whose metric score is truthy; bftweb keeps
    the reviewed selection). With ``multitask=False`` DSPy trains one model per predictor:
    pass ``predictor_index`` to get that predictor's rows.
    """
    if not multitask and predictor_index is None:
        raise ValueError("multitask=False builds rows per predictor: pass predictor_index")
    adapter = chat_adapter()
    rows = []
    for trace in traces:
        for index, call in enumerate(trace["calls"]):
            if call.get("error"):
                continue  # a call that did not parse never trains (DSPy would crash on it)
            if multitask or index == predictor_index:
                rows.append(
                    {"messages": call_messages(call, exclude_demos=exclude_demos, adapter=adapter)}
                )
    random.Random(0).shuffle(rows)  # the same seeded shuffle as DSPy
    return rows


def rerender_trace(trace: dict[str, Any], edited_outputs: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``trace`` with a reviewer's edited output fields, re-rendered through the adapter.

    Edited fields replace the program outputs and the outputs of the call that produced them;
    a later call that read an edited field as input sees the edited value too.
    """
    edited = copy.deepcopy(trace)
    known = set(edited["outputs"]) | {
        f["name"] for c in edited["calls"] for f in c["signature"]["outputs"]
    }
    unknown = sorted(set(edited_outputs) - known)
    if unknown:
        raise ValueError(f"cannot edit unknown output field(s): {', '.join(unknown)}")
    edited["outputs"].update({k: v for k, v in edited_outputs.items() if k in edited["outputs"]})
    for call in edited["calls"]:
        for name in list(call["inputs"]):
            if name in edited_outputs:
                call["inputs"][name] = edited_outputs[name]
        produced = {f["name"] for f in call["signature"]["outputs"]}
        for name, value in edited_outputs.items():
            if name in produced:
                call["outputs"][name] = value
        call["messages"] = call_messages(call)
    return edited
