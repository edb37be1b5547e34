"""Declarative program specs (JSON or YAML): parsing and validation, without importing DSPy.

A spec names one or more DSPy modules (``Predict`` or ``ChainOfThought``) that run in sequence;
a later module may read the outputs of earlier ones::

    {"name": "sentiment",
     "modules": [{"name": "classify", "type": "ChainOfThought",
                  "signature": "text -> sentiment",
                  "instructions": "Classify the sentiment of the text.",
                  "fields": {"text": "a product review", "sentiment": "positive or negative"}}]}

A field description is a string, or DSPy's own form ``{"desc": "...", "prefix": "..."}``.

Nothing in a spec is ever executed. Signature strings are parsed here with a small grammar
(``name[: type], ... -> name[: type], ...``, types from a fixed list) instead of DSPy's own
parser, which resolves type names through ``typing``, the caller's stack frames and ``Field(...)``
calls. Signatures are then built from plain ``(type, FieldInfo)`` pairs. YAML is read with
``yaml.safe_load`` only.
"""

from __future__ import annotations

import json
import keyword
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

MODULE_TYPES = ("Predict", "ChainOfThought")
FIELD_TYPES: dict[str, type] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "list[str]": list[str],
}
MAX_SPEC_CHARS = 200_000
MAX_NAME_CHARS = 64

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPEC_KEYS = ("name", "modules")
_MODULE_KEYS = ("name", "type", "signature", "instructions", "fields")
_FIELD_KEYS = ("desc", "prefix")  # DSPy's InputField/OutputField(desc=..., prefix=...)


def _names(*groups: str) -> frozenset[str]:
    """The names in ``groups``, each a string of whitespace-separated names."""
    return frozenset(name for group in groups for name in group.split())


# Field names DSPy gives a meaning of its own. ChainOfThought adds ``reasoning``; ``Predict.__call__``
# pops ``signature``, ``demos``, ``config``, ``lm`` and ``prediction`` from its keyword arguments;
# Example / Prediction methods would shadow attribute access; pydantic (under dspy.Signature)
# refuses or warns about names of its own members. Names starting with "model_" (pydantic's
# namespace) are refused as well, by _parse_side. tests/engine/test_programs.py checks that this
# list still covers dspy's attributes.
RESERVED_FIELD_NAMES = _names(
    "reasoning",
    # Predict keyword arguments
    "signature demos config lm prediction new_signature",
    # dspy.Example / dspy.Prediction
    "completions copy from_completions get get_lm_usage inputs items keys labels set_lm_usage",
    "toDict values with_inputs without",
    # dspy.Signature (class methods, pydantic v1-style members)
    "append append_instructions construct delete dict dump_state equals from_orm insert json",
    "load_state parse_file parse_obj parse_raw prepend schema schema_json update_forward_refs",
    "validate with_instructions with_updated_fields",
)

# Attributes of dspy.Module (and of SpecProgram) that a module name must not replace.
RESERVED_MODULE_NAMES = _names(
    "acall aforward batch callbacks deepcopy dump_state forward get_lm history inspect_history",
    "load load_state map_named_predictors named_parameters named_predictors named_sub_modules",
    "parameters predictors reset_copy save set_lm spec",
)


class ProgramSpecError(ValueError):
    """A spec problem at ``key`` (a path such as ``modules[1].signature``, or ``(document)``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type_name: str = "str"  # a key of FIELD_TYPES
    description: str = ""
    prefix: str = ""  # DSPy's field prefix, e.g. "Topic:"; empty: DSPy infers it from the name

    @property
    def python_type(self) -> type:
        return FIELD_TYPES[self.type_name]

    def signature_part(self) -> str:
        return self.name if self.type_name == "str" else f"{self.name}: {self.type_name}"

    def to_spec_value(self) -> str | dict[str, str] | None:
        """How the spec's ``fields`` mapping writes this field: a plain description string, the
        ``{"desc", "prefix"}`` form when there is a prefix, or None when there is nothing to say."""
        if self.prefix:
            return {"desc": self.description, "prefix": self.prefix}
        return self.description or None


@dataclass(frozen=True)
class ModuleSpec:
    name: str
    type: str  # "Predict" | "ChainOfThought"
    inputs: tuple[FieldSpec, ...]
    outputs: tuple[FieldSpec, ...]
    instructions: str = ""

    @property
    def signature(self) -> str:
        """The signature string, with types only where they are not ``str``."""
        inputs = ", ".join(f.signature_part() for f in self.inputs)
        outputs = ", ".join(f.signature_part() for f in self.outputs)
        return f"{inputs} -> {outputs}"

    @property
    def predictor_name(self) -> str:
        """The name ``named_predictors()`` gives this module's predictor in the built program."""
        return f"{self.name}.predict" if self.type == "ChainOfThought" else self.name

    def to_dict(self) -> dict[str, Any]:
        descriptions = {
            f.name: f.to_spec_value()
            for f in (*self.inputs, *self.outputs)
            if f.to_spec_value() is not None
        }
        return {
            "name": self.name,
            "type": self.type,
            "signature": self.signature,
            "instructions": self.instructions,
            "fields": descriptions,
        }


@dataclass(frozen=True)
class ProgramSpec:
    name: str
    modules: tuple[ModuleSpec, ...]

    @property
    def input_fields(self) -> tuple[str, ...]:
        """Inputs of any module that no earlier module produces, by first appearance."""
        produced: set[str] = set()
        inputs: list[str] = []
        for module in self.modules:
            for field in module.inputs:
                if field.name not in produced and field.name not in inputs:
                    inputs.append(field.name)
            produced.update(f.name for f in module.outputs)
        return tuple(inputs)

    @property
    def output_fields(self) -> tuple[str, ...]:
        return tuple(f.name for module in self.modules for f in module.outputs)

    def predictor_names(self) -> list[str]:
        return [module.predictor_name for module in self.modules]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "modules": [module.to_dict() for module in self.modules]}


# --- parsing ---------------------------------------------------------------------------------


def parse_program_spec(
    source: str | bytes | Mapping[str, Any], *, fmt: str | None = None
) -> ProgramSpec:
    """Parse and validate a spec given as JSON/YAML text or as an already-parsed mapping.

    ``fmt`` is "json", "yaml" or None (JSON when the text starts with "{", YAML otherwise).
    Raises ProgramSpecError naming the first problem found.
    """
    data = source if isinstance(source, Mapping) else _load_document(source, fmt)
    _check_keys(data, _SPEC_KEYS, required=_SPEC_KEYS, key="")
    name = _require_str(data, "name", key="name")
    if not name.strip():
        raise ProgramSpecError("name", "must not be empty")
    raw_modules = data["modules"]
    if not isinstance(raw_modules, list):
        raise ProgramSpecError("modules", f"must be a list, got {_type_label(raw_modules)}")
    if not raw_modules:
        raise ProgramSpecError("modules", "must list at least one module")
    modules = tuple(_parse_module(raw, f"modules[{i}]") for i, raw in enumerate(raw_modules))
    _check_module_names(modules)
    _check_dataflow(modules)
    return ProgramSpec(name=name, modules=modules)


def _load_document(source: str | bytes, fmt: str | None) -> Any:
    if fmt not in (None, "json", "yaml"):
        raise ValueError(f"fmt must be 'json', 'yaml' or None, not {fmt!r}")
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise ProgramSpecError("(document)", f"not valid UTF-8 at byte {e.start}") from e
    source = source.removeprefix("\ufeff")
    if len(source) > MAX_SPEC_CHARS:
        raise ProgramSpecError("(document)", f"longer than {MAX_SPEC_CHARS} characters")
    if fmt is None:
        fmt = "json" if source.lstrip().startswith("{") else "yaml"
    data = _load_json(source) if fmt == "json" else _load_yaml(source)
    if not isinstance(data, dict):
        raise ProgramSpecError(
            "(document)", f"expected a mapping at the top level, got {_type_label(data)}"
        )
    return data


def _load_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ProgramSpecError(
            "(document)", f"invalid JSON: {e.msg} (line {e.lineno}, column {e.colno})"
        ) from e
    except RecursionError as e:
        raise ProgramSpecError("(document)", "invalid JSON: nested too deeply") from e


def _load_yaml(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = e.problem or e.context or "syntax error"
        raise ProgramSpecError("(document)", f"invalid YAML: {problem}{where}") from e
    except yaml.YAMLError as e:
        raise ProgramSpecError("(document)", f"invalid YAML: {e}") from e
    except RecursionError as e:
        raise ProgramSpecError("(document)", "invalid YAML: nested too deeply") from e


def _parse_module(raw: Any, key: str) -> ModuleSpec:
    if not isinstance(raw, dict):
        raise ProgramSpecError(key, f"must be a mapping, got {_type_label(raw)}")
    _check_keys(raw, _MODULE_KEYS, required=("name", "type", "signature"), key=key)
    name = _require_str(raw, "name", key=f"{key}.name")
    _check_name(name, f"{key}.name", what="module name")
    if name in RESERVED_MODULE_NAMES:
        raise ProgramSpecError(
            f"{key}.name", f"'{name}' is reserved by dspy.Module; choose another name"
        )
    module_type = _require_str(raw, "type", key=f"{key}.type")
    if module_type not in MODULE_TYPES:
        raise ProgramSpecError(
            f"{key}.type", f"must be one of {', '.join(MODULE_TYPES)}, not {module_type!r}"
        )
    signature = _require_str(raw, "signature", key=f"{key}.signature")
    inputs, outputs = parse_signature(signature, key=f"{key}.signature")
    instructions = raw.get("instructions", "")
    if instructions is None:
        instructions = ""
    if not isinstance(instructions, str):
        raise ProgramSpecError(
            f"{key}.instructions", f"must be a string, got {_type_label(instructions)}"
        )
    descriptions = _parse_descriptions(
        raw.get("fields"), [n for n, _ in (*inputs, *outputs)], key=f"{key}.fields"
    )
    no_description = ("", "")
    return ModuleSpec(
        name=name,
        type=module_type,
        inputs=tuple(FieldSpec(n, t, *descriptions.get(n, no_description)) for n, t in inputs),
        outputs=tuple(FieldSpec(n, t, *descriptions.get(n, no_description)) for n, t in outputs),
        instructions=instructions.strip(),
    )


def _parse_descriptions(
    raw: Any, field_names: list[str], *, key: str
) -> dict[str, tuple[str, str]]:
    """Field name -> (description, prefix), from strings or ``{"desc", "prefix"}`` mappings."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ProgramSpecError(
            key, f"must be a mapping of field name to description, got {_type_label(raw)}"
        )
    descriptions = {}
    for name, value in raw.items():
        field_key = f"{key}.{name}"
        if name not in field_names:
            raise ProgramSpecError(
                field_key, f"not a field of this module's signature ({', '.join(field_names)})"
            )
        if isinstance(value, dict):
            for option in value:
                if option not in _FIELD_KEYS:
                    raise ProgramSpecError(
                        f"{field_key}.{option}",
                        f"unknown key; a field takes {' and '.join(_FIELD_KEYS)}",
                    )
            description = _optional_str(value.get("desc"), key=f"{field_key}.desc")
            prefix = _optional_str(value.get("prefix"), key=f"{field_key}.prefix")
        else:
            description = _optional_str(value, key=field_key, what="a string or a mapping")
            prefix = ""
        descriptions[name] = (description.strip(), prefix.strip())
    return descriptions


def _optional_str(value: Any, *, key: str, what: str = "a string") -> str:
    """A string value that may be left out (None); anything else names ``key``."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ProgramSpecError(key, f"must be {what}, got {_type_label(value)}")
    return value


def parse_signature(
    text: str, *, key: str = "signature"
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Parse ``"a, b: int -> c: list[str]"`` into ([("a", "str"), ("b", "int")], [("c", "list[str]")]).

    Only names and the type names in FIELD_TYPES are accepted; nothing is evaluated.
    """
    if text.count("->") != 1:
        raise ProgramSpecError(key, "must contain exactly one '->' between inputs and outputs")
    left, right = text.split("->")
    inputs = _parse_side(left, key=key, side="input")
    outputs = _parse_side(right, key=key, side="output")
    seen: set[str] = set()
    for name, _ in (*inputs, *outputs):
        if name in seen:
            raise ProgramSpecError(key, f"field '{name}' appears more than once")
        seen.add(name)
    return inputs, outputs


def _parse_side(text: str, *, key: str, side: str) -> list[tuple[str, str]]:
    if not text.strip():
        raise ProgramSpecError(key, f"needs at least one {side} field")
    fields = []
    for part in _split_top_level(text):
        name, sep, type_text = part.partition(":")
        name = name.strip()
        if not name:
            raise ProgramSpecError(key, f"empty {side} field name in {text.strip()!r}")
        _check_name(name, key, what=f"{side} field name")
        if name in RESERVED_FIELD_NAMES or name.startswith("model_"):
            raise ProgramSpecError(
                key, f"field name '{name}' is reserved by DSPy; choose another name"
            )
        type_name = re.sub(r"\s+", "", type_text) if sep else "str"
        if type_name not in FIELD_TYPES:
            raise ProgramSpecError(
                key,
                f"field '{name}' has type {type_text.strip()!r}; allowed types: {', '.join(FIELD_TYPES)}",
            )
        fields.append((name, type_name))
    return fields


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets, so "a: dict[str, int]" stays one (refused) part."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _check_name(name: str, key: str, *, what: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise ProgramSpecError(
            key,
            f"{what} {name!r} must be an ASCII identifier (letters, digits, '_'; not starting with a digit)",
        )
    if name.startswith("_"):
        raise ProgramSpecError(key, f"{what} {name!r} must not start with '_'")
    if keyword.iskeyword(name):
        raise ProgramSpecError(key, f"{what} {name!r} is a Python keyword")
    if len(name) > MAX_NAME_CHARS:
        raise ProgramSpecError(key, f"{what} {name!r} is longer than {MAX_NAME_CHARS} characters")


def _check_module_names(modules: tuple[ModuleSpec, ...]) -> None:
    seen: set[str] = set()
    for i, module in enumerate(modules):
        if module.name in seen:
            raise ProgramSpecError(f"modules[{i}].name", f"duplicate module name '{module.name}'")
        seen.add(module.name)


def _check_dataflow(modules: tuple[ModuleSpec, ...]) -> None:
    """Each field is produced once, read only after it is produced, with one type throughout."""
    producer: dict[str, int] = {}
    for i, module in enumerate(modules):
        for field in module.outputs:
            if field.name in producer:
                j = producer[field.name]
                raise ProgramSpecError(
                    f"modules[{i}].signature",
                    f"output '{field.name}' is already produced by module '{modules[j].name}' (modules[{j}])",
                )
            producer[field.name] = i
    types: dict[str, tuple[str, str]] = {}  # field -> (type name, module that fixed it)
    for i, module in enumerate(modules):
        for field in module.inputs:
            later = producer.get(field.name)
            if later is not None and later > i:
                raise ProgramSpecError(
                    f"modules[{i}].signature",
                    f"input '{field.name}' is produced by a later module '{modules[later].name}' (modules[{later}]); "
                    "modules run in order",
                )
        for field in (*module.inputs, *module.outputs):
            known = types.setdefault(field.name, (field.type_name, module.name))
            if known[0] != field.type_name:
                raise ProgramSpecError(
                    f"modules[{i}].signature",
                    f"field '{field.name}' is {field.type_name} here but {known[0]} in module '{known[1]}'",
                )


def _check_keys(
    data: Mapping[Any, Any], allowed: tuple[str, ...], *, required: tuple[str, ...], key: str
) -> None:
    unknown = [str(k) for k in data if k not in allowed]
    if unknown:
        raise ProgramSpecError(
            key or "(document)",
            f"unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}",
        )
    for name in required:
        if name not in data:
            raise ProgramSpecError(f"{key}.{name}" if key else name, "is required")


def _require_str(data: Mapping[str, Any], name: str, *, key: str) -> str:
    value = data[name]
    if not isinstance(value, str):
        raise ProgramSpecError(key, f"must be a string, got {_type_label(value)}")
    return value


def _type_label(value: Any) -> str:
    labels = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        type(None): "nothing",
    }
    return labels.get(type(value), type(value).__name__)


# --- fit to a trainset -----------------------------------------------------------------------


def check_fields(
    spec: ProgramSpec, available_fields: Iterable[str], label_fields: Iterable[str] = ()
) -> list[str]:
    """Human messages for what a trainset with ``available_fields`` lacks; empty if it fits.

    Every program input must be a trainset field, and so must every label field (e.g. the field
    the metric compares against).
    """
    available = list(dict.fromkeys(available_fields))
    listing = ", ".join(available) if available else "none"
    problems = [
        f"program input '{name}' is not a trainset field (trainset fields: {listing})"
        for name in spec.input_fields
        if name not in available
    ]
    problems += [
        f"label field '{name}' is not a trainset field (trainset fields: {listing})"
        for name in dict.fromkeys(label_fields)
        if name not in available
    ]
    return problems
