"""The ``dspy.Module`` a program spec builds (the spec itself is ``jobs/engine/programs.py``).

This module imports DSPy; ``programs`` does not (the web process validates specs without DSPy)
and never imports this one. Signatures are built from typed ``(type, FieldInfo)`` pairs: no
signature string is parsed by DSPy.
"""

from __future__ import annotations

from typing import Any

import dspy
from dspy.utils.constants import IS_TYPE_UNDEFINED

from jobs.engine.programs import FieldSpec, ModuleSpec, ProgramSpec


def _field_info(field: FieldSpec, make: Any, **kwargs: Any) -> Any:
    """``make`` (dspy.InputField / OutputField) with the spec's description and prefix.

    The prefix is set in ``json_schema_extra`` as ``Signature.load_state`` sets it, because passing
    ``prefix=`` warns that it is deprecated; DSPy keeps it in the signature and its saved state.
    """
    if field.description:
        kwargs["desc"] = field.description
    info = make(**kwargs)
    if field.prefix:
        info.json_schema_extra["prefix"] = field.prefix
    return info


def _make_signature(module: ModuleSpec) -> type[dspy.Signature]:
    """A dspy.Signature class from typed fields: no signature string is parsed by DSPy."""
    fields: dict[str, tuple[type, Any]] = {}
    for field in module.inputs:
        # As DSPy's parser marks untyped inputs: Predict then skips its type-mismatch warning
        # (trainset values such as numbers are passed to str inputs as they are).
        extra = {IS_TYPE_UNDEFINED: True} if field.type_name == "str" else {}
        fields[field.name] = (field.python_type, _field_info(field, dspy.InputField, **extra))
    for field in module.outputs:
        fields[field.name] = (field.python_type, _field_info(field, dspy.OutputField))
    signature: type[dspy.Signature] = dspy.make_signature(fields, module.instructions or None)
    return signature


def _make_module(module: ModuleSpec) -> dspy.Module:
    signature = _make_signature(module)
    if module.type == "ChainOfThought":
        return dspy.ChainOfThought(signature)
    return dspy.Predict(signature)


class SpecProgram(dspy.Module):
    """Runs a ProgramSpec's modules in order; one attribute per module, named as in the spec.

    ``SpecProgram(spec).load(path)`` restores state saved with ``program.save(path)``.
    """

    def __init__(self, spec: ProgramSpec) -> None:
        super().__init__()
        self._spec = spec
        for module in spec.modules:
            setattr(self, module.name, _make_module(module))

    @property
    def spec(self) -> ProgramSpec:
        return self._spec

    def forward(self, **inputs: Any) -> dspy.Prediction:
        """Call each module with the values it reads; return every declared output.

        Keyword arguments that are not program inputs are ignored (a trainset may carry more
        columns than the program reads). A failing module call propagates.
        """
        missing = [name for name in self._spec.input_fields if name not in inputs]
        if missing:
            raise ValueError(f"missing program input(s): {', '.join(missing)}")
        values = dict(inputs)
        outputs: dict[str, Any] = {}
        for module in self._spec.modules:
            kwargs = {field.name: values[field.name] for field in module.inputs}
            prediction = getattr(self, module.name)(**kwargs)
            for field in module.outputs:
                values[field.name] = outputs[field.name] = prediction[field.name]
        return dspy.Prediction(**outputs)


def build_program(spec: ProgramSpec) -> SpecProgram:
    """A fresh :class:`SpecProgram` (a ``dspy.Module``) for ``spec``: no demos, no LM bound."""
    return SpecProgram(spec)
