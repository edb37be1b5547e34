"""Built-in metrics: one output field of a prediction against the gold value, scored in [0, 1].

Values are compared as text: ``str()`` of non-strings, lists joined by ", ". Normalization
follows SQuAD's evaluation script (casefold, drop punctuation and the articles a/an/the, collapse
whitespace), with Unicode punctuation and NFKC compatibility forms handled as well.

``score`` never raises on data: a missing prediction, a missing gold value or a gold value the
metric cannot read scores 0.0. Problems with the spec itself are found by ``validate_metric_spec``.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jobs.engine.types import MetricSpec

METRICS: dict[str, str] = {
    "exact_match": "the prediction equals the gold value exactly (surrounding whitespace ignored)",
    "normalized_match": "equal after normalization (case, punctuation, articles, spacing ignored)",
    "contains": "the normalized gold value appears, as whole words, in the normalized prediction",
    "token_f1": "word-overlap F1 between prediction and gold after normalization (SQuAD)",
    "numeric": "the first number in the prediction equals the gold number within a tolerance",
    "regex": "the prediction matches a regular expression (re.search)",
}

# Allowed options per metric, and their checks.
OPTIONS: dict[str, tuple[str, ...]] = {
    "exact_match": (),
    "normalized_match": (),
    "contains": (),
    "token_f1": (),
    "numeric": ("tolerance", "relative"),
    "regex": ("pattern",),
}
DEFAULT_TOLERANCE = 1e-6
MAX_PATTERN_CHARS = 1_000

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)
# A number: a sign (not after a letter or digit: "COVID-19" holds 19), digits with optional
# thousands commas ("1,234"; "3,5" is 3), decimals, exponent.
_NUMBER = re.compile(
    r"(?:(?<!\w)[-+\u2212])?"
    r"(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d*)?|\.\d+)"
    r"(?:[eE][-+]?\d+)?"
)
_MISSING = object()


class MetricSpecError(ValueError):
    """A metric spec problem at ``key`` ("name", "field", "threshold", "options.<option>")."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


# --- validation ------------------------------------------------------------------------------


def validate_metric_spec(spec: MetricSpec, output_fields: Iterable[str] | None = None) -> None:
    """Raise MetricSpecError (a ValueError) naming the first problem; return None if usable."""
    if spec.name not in METRICS:
        raise MetricSpecError("name", f"unknown metric {spec.name!r}; known: {', '.join(METRICS)}")
    if not isinstance(spec.field, str) or not spec.field:
        raise MetricSpecError("field", "name the output field to score")
    if output_fields is not None:
        outputs = list(output_fields)
        if spec.field not in outputs:
            raise MetricSpecError(
                "field",
                f"{spec.field!r} is not an output field of the program (outputs: {', '.join(outputs)})",
            )
    threshold = spec.threshold
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not 0 <= threshold <= 1
    ):
        raise MetricSpecError("threshold", f"must be a number between 0 and 1, not {threshold!r}")
    _validate_options(spec)


def _validate_options(spec: MetricSpec) -> None:
    if not isinstance(spec.options, Mapping):
        raise MetricSpecError("options", f"must be a mapping, not {type(spec.options).__name__}")
    allowed = OPTIONS[spec.name]
    for key in spec.options:
        if key not in allowed:
            known = f"its options: {', '.join(allowed)}" if allowed else "it takes no options"
            raise MetricSpecError(f"options.{key}", f"not an option of {spec.name} ({known})")
    if spec.name == "numeric":
        tolerance = spec.options.get("tolerance", DEFAULT_TOLERANCE)
        if (
            isinstance(tolerance, bool)
            or not isinstance(tolerance, int | float)
            or not math.isfinite(tolerance)
            or tolerance < 0
        ):
            raise MetricSpecError("options.tolerance", f"must be a number >= 0, not {tolerance!r}")
        if not isinstance(spec.options.get("relative", False), bool):
            raise MetricSpecError("options.relative", "must be true or false")
    if spec.name == "regex":
        _compile_pattern(spec.options.get("pattern"))


def _compile_pattern(pattern: Any) -> re.Pattern[str]:
    if not isinstance(pattern, str) or not pattern:
        raise MetricSpecError("options.pattern", "a regular expression is required")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise MetricSpecError("options.pattern", f"longer than {MAX_PATTERN_CHARS} characters")
    try:
        return re.compile(pattern)
    except re.error as e:
        raise MetricSpecError("options.pattern", f"invalid regular expression: {e}") from e


# --- scoring ---------------------------------------------------------------------------------


def score(spec: MetricSpec, gold: Mapping[str, Any], prediction: Mapping[str, Any]) -> float:
    """Score ``prediction[spec.field]`` against ``gold[spec.field]``, in [0, 1]."""
    return _score_values(spec, _field_value(gold, spec.field), _field_value(prediction, spec.field))


def _score_values(spec: MetricSpec, expected: Any, predicted: Any) -> float:
    if predicted is None or predicted is _MISSING:
        return 0.0
    prediction_text = as_text(predicted)
    if spec.name == "regex":
        pattern = _compile_pattern(spec.options.get("pattern"))
        return 1.0 if pattern.search(prediction_text) else 0.0
    if expected is None or expected is _MISSING:
        return 0.0
    gold_text = as_text(expected)
    if spec.name == "exact_match":
        return 1.0 if prediction_text.strip() == gold_text.strip() else 0.0
    if spec.name == "normalized_match":
        return 1.0 if normalize(prediction_text) == normalize(gold_text) else 0.0
    if spec.name == "contains":
        return contains(gold_text, prediction_text)
    if spec.name == "token_f1":
        return token_f1(prediction_text, gold_text)
    if spec.name == "numeric":
        return numeric_match(prediction_text, gold_text, spec.options)
    raise MetricSpecError("name", f"unknown metric {spec.name!r}; known: {', '.join(METRICS)}")


def as_text(value: Any) -> str:
    """How a value is compared: strings as they are, lists joined by ", ", others via str()."""
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return ", ".join(as_text(item) for item in value)
    return str(value)


def normalize(text: str) -> str:
    """SQuAD normalization, Unicode-aware: casefold, drop punctuation and articles, collapse spaces."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(char for char in text if not _is_punctuation(char))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _is_punctuation(char: str) -> bool:
    return char in _PUNCTUATION or unicodedata.category(char).startswith("P")


def contains(gold: str, prediction: str) -> float:
    """1.0 when the normalized gold words appear contiguously in the normalized prediction.

    An empty gold value only matches an empty prediction.
    """
    gold_norm, prediction_norm = normalize(gold), normalize(prediction)
    if not gold_norm:
        return 1.0 if not prediction_norm else 0.0
    return 1.0 if f" {gold_norm} " in f" {prediction_norm} " else 0.0


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD token F1; two empty values score 1.0, one empty value 0.0."""
    prediction_tokens = normalize(prediction).split()
    gold_tokens = normalize(gold).split()
    if not prediction_tokens or not gold_tokens:
        return 1.0 if prediction_tokens == gold_tokens else 0.0
    common = sum((Counter(prediction_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(prediction_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def first_number(text: str) -> float | None:
    """The first number in ``text`` ("1,234.5" -> 1234.5, "$3" -> 3.0, "-2e3" -> -2000.0)."""
    match = _NUMBER.search(text)
    if match is None:
        return None
    literal = match.group().replace(",", "").replace("\u2212", "-")
    try:
        return float(literal)
    except (ValueError, OverflowError):
        return None


def numeric_match(prediction: str, gold: str, options: Mapping[str, Any]) -> float:
    """1.0 when the first numbers of both texts agree within the tolerance.

    ``options["tolerance"]`` (default 1e-6) is absolute, or relative to the gold value when
    ``options["relative"]`` is true.
    """
    predicted, expected = first_number(prediction), first_number(gold)
    if predicted is None or expected is None:
        return 0.0
    tolerance = float(options.get("tolerance", DEFAULT_TOLERANCE))
    allowed = tolerance * abs(expected) if options.get("relative", False) else tolerance
    return 1.0 if abs(predicted - expected) <= allowed else 0.0


# --- DSPy ------------------------------------------------------------------------------------


def make_dspy_metric(spec: MetricSpec) -> Callable[..., float | bool]:
    """A DSPy metric ``(example, prediction, trace=None)``.

    Returns the score when ``trace`` is None (evaluation) and ``score >= threshold`` otherwise
    (DSPy's convention while bootstrapping). ``example`` and ``prediction`` may be dspy.Example /
    dspy.Prediction objects, plain mappings, or anything with the field as an attribute (a failed
    prediction without it scores 0.0).
    """
    validate_metric_spec(spec)

    def metric(example: Any, prediction: Any, trace: Any = None) -> float | bool:
        value = _score_values(
            spec, _field_value(example, spec.field), _field_value(prediction, spec.field)
        )
        return value if trace is None else value >= spec.threshold

    metric.__name__ = f"{spec.name}_{spec.field}"
    return metric


def _field_value(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, _MISSING)
    get = getattr(obj, "get", None)
    if callable(get):  # dspy.Example / dspy.Prediction
        return get(name, _MISSING)
    return getattr(obj, name, _MISSING)
