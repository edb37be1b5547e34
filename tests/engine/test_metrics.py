"""Built-in metrics: every metric with its edge cases, spec validation, the DSPy wrapper."""

from __future__ import annotations

import dspy
import pytest
from dspy.teleprompt.bootstrap_trace import FailedPrediction

from jobs.engine.metrics import (
    METRICS,
    MetricSpecError,
    first_number,
    make_dspy_metric,
    normalize,
    score,
    validate_metric_spec,
)
from jobs.engine.types import MetricSpec


def scored(name: str, gold, prediction, **options) -> float:
    spec = MetricSpec(name=name, field="answer", options=options)
    validate_metric_spec(spec)
    return score(spec, {"answer": gold}, {"answer": prediction})


def test_every_metric_has_a_description():
    assert set(METRICS) == {
        "exact_match",
        "normalized_match",
        "contains",
        "token_f1",
        "numeric",
        "regex",
    }
    assert all(isinstance(text, str) and text for text in METRICS.values())


# --- each metric -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gold", "prediction", "expected"),
    [
        ("Paris", "Paris", 1.0),
        ("Paris", " Paris\n", 1.0),
        ("Paris", "paris", 0.0),
        ("Paris", "Paris.", 0.0),
        ("", "", 1.0),
        ("", "x", 0.0),
        ("Zürich", "Zürich", 1.0),
        (4, "4", 1.0),
        (["a", "b"], "a, b", 1.0),
    ],
)
def test_exact_match(gold, prediction, expected):
    assert scored("exact_match", gold, prediction) == expected


@pytest.mark.parametrize(
    ("gold", "prediction", "expected"),
    [
        ("Paris", "paris.", 1.0),
        ("The Eiffel Tower", "eiffel   tower!", 1.0),
        ("an apple", "Apple", 1.0),
        ("positive", "Positive", 1.0),
        ("positive", "negative", 0.0),
        ("ZÜRICH", "zürich", 1.0),
        ("straße", "STRASSE", 1.0),  # casefold, not lower
        ("«Oui»", "oui", 1.0),  # Unicode punctuation
        ("１２", "12", 1.0),  # NFKC
        ("", "", 1.0),
        ("", "...", 1.0),  # nothing left after normalization on either side
        ("yes", "", 0.0),
        (True, "true", 1.0),
    ],
)
def test_normalized_match(gold, prediction, expected):
    assert scored("normalized_match", gold, prediction) == expected


def test_normalize_follows_squad():
    assert normalize("  The  quick, brown FOX!  ") == "quick brown fox"
    assert normalize("a theater") == "theater"  # articles only as whole words


@pytest.mark.parametrize(
    ("gold", "prediction", "expected"),
    [
        ("Paris", "The answer is Paris.", 1.0),
        ("new york", "I think New York City", 1.0),
        ("no", "not sure", 0.0),  # whole words only
        ("York New", "New York", 0.0),
        ("Paris", "", 0.0),
        ("", "", 1.0),
        ("", "anything", 0.0),
        ("café", "Le CAFÉ est ouvert", 1.0),
    ],
)
def test_contains(gold, prediction, expected):
    assert scored("contains", gold, prediction) == expected


@pytest.mark.parametrize(
    ("gold", "prediction", "expected"),
    [
        ("the cat sat", "The cat sat.", 1.0),
        ("cat sat on mat", "cat sat", 2 * (1.0 * 0.5) / 1.5),
        ("a b c", "x y z", 0.0),
        ("", "", 1.0),
        ("", "words", 0.0),
        ("words", "", 0.0),
        ("the", "a", 1.0),  # both empty after dropping articles
        ("cat cat", "cat", 2 * (1.0 * 0.5) / 1.5),  # token counts, not sets
        ("über alles", "Über", 2 * (1.0 * 0.5) / 1.5),
    ],
)
def test_token_f1(gold, prediction, expected):
    assert scored("token_f1", gold, prediction) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("1,234.5", 1234.5),
        ("$3", 3.0),
        ("-2e3", -2000.0),
        ("The answer is 42.", 42.0),
        ("x = -5 apples", -5.0),
        ("COVID-19", 19.0),
        ("\u22124", -4.0),  # Unicode minus
        ("+7%", 7.0),
        (".5", 0.5),
        ("1,234,567 people", 1234567.0),
        ("3,5", 3.0),  # a comma is a thousands separator only
        ("１２", 12.0),
        ("no digits", None),
        ("", None),
    ],
)
def test_first_number(text, number):
    assert first_number(text) == number


@pytest.mark.parametrize(
    ("gold", "prediction", "options", "expected"),
    [
        ("1234.5", "It costs 1,234.5 dollars", {}, 1.0),
        ("$3", "3", {}, 1.0),
        ("-2000", "-2e3", {}, 1.0),
        (42, "42.0000001", {}, 1.0),
        (42, "42.01", {}, 0.0),
        (42, "42.01", {"tolerance": 0.1}, 1.0),
        (200, "201", {"tolerance": 0.01, "relative": True}, 1.0),
        (200, "203", {"tolerance": 0.01, "relative": True}, 0.0),
        (0, "0", {"tolerance": 0.01, "relative": True}, 1.0),
        (5, "no number here", {}, 0.0),
        ("unknown", "5", {}, 0.0),  # a gold value without a number cannot pass
        ("", "", {}, 0.0),
    ],
)
def test_numeric(gold, prediction, options, expected):
    assert scored("numeric", gold, prediction, **options) == expected


@pytest.mark.parametrize(
    ("pattern", "prediction", "expected"),
    [
        (r"^(positive|negative)$", "positive", 1.0),
        (r"^(positive|negative)$", "positive!", 0.0),
        (r"\d+", "answer: 12", 1.0),  # search, not fullmatch
        (r"(?i)paris", "PARIS", 1.0),
        (r"^$", "", 1.0),
        (r"é", "café", 1.0),
    ],
)
def test_regex(pattern, prediction, expected):
    assert scored("regex", "ignored", prediction, pattern=pattern) == expected


@pytest.mark.parametrize("name", list(METRICS))
def test_a_missing_or_none_prediction_scores_zero(name):
    options = {"pattern": ".*"} if name == "regex" else {}
    spec = MetricSpec(name=name, field="answer", options=options)
    assert score(spec, {"answer": "x"}, {}) == 0.0
    assert score(spec, {"answer": "x"}, {"answer": None}) == 0.0
    if name != "regex":  # regex reads no gold value
        assert score(spec, {}, {"answer": "x"}) == 0.0
        assert score(spec, {"answer": None}, {"answer": "x"}) == 0.0


def test_list_predictions_are_joined():
    assert scored("exact_match", "red, green", ["red", "green"]) == 1.0
    assert scored("contains", "green", ["red", "green"]) == 1.0


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "key", "fragment"),
    [
        (MetricSpec("bleu", "answer"), "name", "known: exact_match, normalized_match"),
        (MetricSpec("exact_match", ""), "field", "name the output field"),
        (MetricSpec("exact_match", "answr"), "field", "'answr' is not an output field"),
        (MetricSpec("exact_match", "answer", threshold=1.5), "threshold", "between 0 and 1"),
        (MetricSpec("exact_match", "answer", threshold=-0.1), "threshold", "between 0 and 1"),
        (MetricSpec("exact_match", "answer", threshold=True), "threshold", "between 0 and 1"),
        (MetricSpec("exact_match", "answer", options={"x": 1}), "options.x", "takes no options"),
        (MetricSpec("numeric", "answer", options={"tol": 1}), "options.tol", "tolerance, relative"),
        (MetricSpec("numeric", "answer", options={"tolerance": -1}), "options.tolerance", ">= 0"),
        (MetricSpec("numeric", "answer", options={"tolerance": "1"}), "options.tolerance", ">= 0"),
        (
            MetricSpec("numeric", "answer", options={"relative": "yes"}),
            "options.relative",
            "true or false",
        ),
        (MetricSpec("regex", "answer"), "options.pattern", "is required"),
        (
            MetricSpec("regex", "answer", options={"pattern": "(unclosed"}),
            "options.pattern",
            "invalid regular expression",
        ),
        (
            MetricSpec("regex", "answer", options={"pattern": "x" * 1001}),
            "options.pattern",
            "longer than",
        ),
    ],
)
def test_validate_metric_spec_names_the_problem(spec, key, fragment):
    with pytest.raises(MetricSpecError) as info:
        validate_metric_spec(spec, output_fields=["answer", "reasoning_summary"])
    assert info.value.key == key
    assert fragment in info.value.message
    assert isinstance(info.value, ValueError)


def test_valid_specs_pass_validation():
    validate_metric_spec(MetricSpec("token_f1", "answer", threshold=0.5), ["answer"])
    validate_metric_spec(
        MetricSpec("numeric", "answer", threshold=0, options={"tolerance": 1, "relative": True})
    )
    validate_metric_spec(MetricSpec("regex", "label", options={"pattern": "^a$"}), None)


# --- the DSPy metric -------------------------------------------------------------------------


def test_the_dspy_metric_scores_examples_and_predictions():
    metric = make_dspy_metric(MetricSpec("token_f1", "answer", threshold=0.5))
    example = dspy.Example(question="q", answer="black cat sat").with_inputs("question")
    prediction = dspy.Prediction(answer="cat sat")
    assert metric(example, prediction) == pytest.approx(0.8)
    assert metric(example, prediction, trace=[]) is True
    assert metric(example, dspy.Prediction(answer="dog"), trace=[]) is False
    assert metric.__name__ == "token_f1_answer"


def test_the_dspy_metric_accepts_dicts_and_failed_predictions():
    metric = make_dspy_metric(MetricSpec("exact_match", "answer"))
    assert metric({"answer": "4"}, {"answer": "4"}) == 1.0
    assert metric({"answer": "4"}, {"answer": "4"}, None) == 1.0
    assert metric({"answer": "4"}, FailedPrediction(completion_text="garbage")) == 0.0
    assert metric({"answer": "4"}, FailedPrediction(completion_text="garbage"), trace=[]) is False
    assert metric(dspy.Example(other="x"), dspy.Prediction(answer="4")) == 0.0


def test_the_dspy_metric_uses_the_threshold_only_with_a_trace():
    metric = make_dspy_metric(
        MetricSpec("numeric", "answer", threshold=1.0, options={"tolerance": 0.5})
    )
    assert metric(dspy.Example(answer="10"), dspy.Prediction(answer="10.4")) == 1.0
    assert (
        metric(dspy.Example(answer="10"), dspy.Prediction(answer="10.6"), trace=[("call",)])
        is False
    )


def test_make_dspy_metric_validates_the_spec():
    with pytest.raises(MetricSpecError, match="options.pattern"):
        make_dspy_metric(MetricSpec("regex", "answer", options={"pattern": "("}))
