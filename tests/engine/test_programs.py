"""Program specs: parsing, every error's key, dataflow, building and running with DummyLM."""

from __future__ import annotations

import json
import os

import dspy
import pytest
from dspy.utils.dummies import DummyLM
from dspy.utils.exceptions import AdapterParseError

from jobs.engine.program_module import SpecProgram, build_program
from jobs.engine.programs import (
    RESERVED_FIELD_NAMES,
    RESERVED_MODULE_NAMES,
    FieldSpec,
    ProgramSpecError,
    check_fields,
    parse_program_spec,
)

SENTIMENT_JSON = """{
  "name": "sentiment",
  "modules": [
    {"name": "classify", "type": "ChainOfThought",
     "signature": "text -> sentiment",
     "instructions": "Classify the sentiment of the text as positive or negative.",
     "fields": {"text": "a product review", "sentiment": "positive or negative"}}
  ]
}"""

TWO_STEP_YAML = """\
name: qa
modules:
  - name: extract
    type: Predict
    signature: "question, context -> facts: list[str], count: int"
    instructions: List the facts that answer the question.
  - name: answer
    type: ChainOfThought
    signature: "question, facts: list[str] -> answer"
    fields:
      answer: a short answer
"""


def module(**overrides):
    data = {"name": "m", "type": "Predict", "signature": "a -> b"}
    data.update(overrides)
    return data


def spec_dict(*modules):
    return {"name": "p", "modules": list(modules) or [module()]}


def parse_error(source, **kwargs) -> ProgramSpecError:
    with pytest.raises(ProgramSpecError) as info:
        parse_program_spec(source, **kwargs)
    return info.value


# --- valid specs -----------------------------------------------------------------------------


def test_it_parses_a_single_module_json_spec():
    spec = parse_program_spec(SENTIMENT_JSON)
    assert spec.name == "sentiment"
    (classify,) = spec.modules
    assert classify.type == "ChainOfThought"
    assert classify.inputs == (FieldSpec("text", "str", "a product review"),)
    assert classify.outputs == (FieldSpec("sentiment", "str", "positive or negative"),)
    assert classify.instructions.startswith("Classify the sentiment")
    assert spec.input_fields == ("text",)
    assert spec.output_fields == ("sentiment",)
    assert spec.predictor_names() == ["classify.predict"]


def test_it_parses_a_multi_module_yaml_spec_with_types():
    spec = parse_program_spec(TWO_STEP_YAML)
    extract, answer = spec.modules
    assert [(f.name, f.type_name) for f in extract.outputs] == [
        ("facts", "list[str]"),
        ("count", "int"),
    ]
    assert answer.outputs == (FieldSpec("answer", "str", "a short answer"),)
    assert spec.input_fields == ("question", "context")
    assert spec.output_fields == ("facts", "count", "answer")
    assert spec.predictor_names() == ["extract", "answer.predict"]


def test_it_accepts_bytes_with_a_bom_a_dict_and_an_explicit_format():
    from_bytes = parse_program_spec(b"\xef\xbb\xbf" + SENTIMENT_JSON.encode())
    from_dict = parse_program_spec(json.loads(SENTIMENT_JSON))
    as_yaml = parse_program_spec(SENTIMENT_JSON, fmt="yaml")  # JSON is YAML too
    assert from_bytes == from_dict == as_yaml


def test_it_round_trips_through_to_dict_json_and_yaml():
    import yaml

    for source in (SENTIMENT_JSON, TWO_STEP_YAML):
        spec = parse_program_spec(source)
        assert parse_program_spec(spec.to_dict()) == spec
        assert parse_program_spec(json.dumps(spec.to_dict())) == spec
        assert parse_program_spec(yaml.safe_dump(spec.to_dict())) == spec


def test_predictor_names_match_what_dspy_names_them():
    for source in (SENTIMENT_JSON, TWO_STEP_YAML):
        spec = parse_program_spec(source)
        program = build_program(spec)
        assert [name for name, _ in program.named_predictors()] == spec.predictor_names()


DSPY_FIELDS_YAML = """\
name: essay
modules:
  - name: write
    type: ChainOfThought
    signature: "topic -> essay"
    fields:
      topic: {desc: "what the essay is about", prefix: "Topic:"}
      essay: "three sentences"
"""


def test_fields_take_dspys_desc_and_prefix_form_next_to_plain_strings():
    spec = parse_program_spec(DSPY_FIELDS_YAML)
    (write,) = spec.modules
    assert write.inputs == (FieldSpec("topic", "str", "what the essay is about", "Topic:"),)
    assert write.outputs == (FieldSpec("essay", "str", "three sentences"),)
    assert write.to_dict()["fields"] == {
        "topic": {"desc": "what the essay is about", "prefix": "Topic:"},
        "essay": "three sentences",
    }
    # a spec without prefixes is stored exactly as before
    assert parse_program_spec(SENTIMENT_JSON).to_dict()["modules"][0]["fields"] == {
        "text": "a product review",
        "sentiment": "positive or negative",
    }
    # either key may be left out
    only_prefix = parse_program_spec(spec_dict(module(fields={"a": {"prefix": "A:"}, "b": {}})))
    assert only_prefix.modules[0].inputs == (FieldSpec("a", "str", "", "A:"),)
    assert only_prefix.modules[0].outputs == (FieldSpec("b", "str", ""),)


def test_a_stored_dspy_field_form_builds_the_dspy_fields_and_their_saved_state(tmp_path):
    import yaml

    spec = parse_program_spec(DSPY_FIELDS_YAML)
    stored = json.loads(json.dumps(spec.to_dict()))  # as the database's JSONField keeps it
    assert parse_program_spec(stored) == spec
    assert parse_program_spec(yaml.safe_dump(stored)) == spec

    program = build_program(parse_program_spec(stored))
    signature = program.write.predict.signature
    topic = signature.input_fields["topic"].json_schema_extra
    assert (topic["desc"], topic["prefix"]) == ("what the essay is about", "Topic:")
    essay = signature.output_fields["essay"].json_schema_extra
    assert (essay["desc"], essay["prefix"]) == ("three sentences", "Essay:")  # DSPy's own default
    assert signature.dump_state()["fields"][0] == {
        "prefix": "Topic:",
        "description": "what the essay is about",
    }
    path = tmp_path / "program.json"
    program.save(str(path))
    loaded = build_program(spec)
    loaded.load(str(path))
    assert loaded.write.predict.signature.input_fields["topic"].json_schema_extra["prefix"] == (
        "Topic:"
    )

    lm = DummyLM([{"reasoning": "r", "essay": "One. Two. Three."}])
    with dspy.context(lm=lm):
        assert program(topic="tides").essay == "One. Two. Three."
    assert "what the essay is about" in lm.history[0]["messages"][0]["content"]


def test_whitespace_in_types_and_names_is_tolerated():
    spec = parse_program_spec(spec_dict(module(signature="  a :  list[ str ] ,b->  c:int ")))
    (m,) = spec.modules
    assert [(f.name, f.type_name) for f in m.inputs] == [("a", "list[str]"), ("b", "str")]
    assert m.signature == "a: list[str], b -> c: int"


# --- errors name the right key ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "key", "fragment"),
    [
        ('{"name": "p", "modules": [}', "(document)", "line 1, column 27"),
        ("name: p\nmodules: [\n  - x", "(document)", "line 3"),
        ("[1, 2]", "(document)", "a mapping at the top level"),
        ("just a string", "(document)", "a mapping at the top level"),
        ("!!python/object/apply:os.system ['true']", "(document)", "invalid YAML"),
        ('{"name": "p", "modules": [], "extra": 1}', "(document)", "'extra'"),
        ('{"modules": []}', "name", "is required"),
        ('{"name": "p"}', "modules", "is required"),
        ('{"name": 3, "modules": []}', "name", "must be a string"),
        ('{"name": " ", "modules": []}', "name", "must not be empty"),
        ('{"name": "p", "modules": []}', "modules", "at least one module"),
        ('{"name": "p", "modules": {"a": 1}}', "modules", "must be a list"),
    ],
)
def test_document_errors(source, key, fragment):
    error = parse_error(source)
    assert error.key == key
    assert fragment in error.message
    assert str(error) == f"{key}: {error.message}"


@pytest.mark.parametrize(
    ("modules", "key", "fragment"),
    [
        (["nope"], "modules[0]", "must be a mapping"),
        ([module(signatur="a -> b")], "modules[0]", "'signatur'"),
        ([{"name": "m", "type": "Predict"}], "modules[0].signature", "is required"),
        ([{"type": "Predict", "signature": "a -> b"}], "modules[0].name", "is required"),
        ([module(type="ReAct")], "modules[0].type", "Predict, ChainOfThought"),
        ([module(name="my-module")], "modules[0].name", "ASCII identifier"),
        ([module(name="_hidden")], "modules[0].name", "must not start with '_'"),
        ([module(name="lambda")], "modules[0].name", "Python keyword"),
        ([module(name="forward")], "modules[0].name", "reserved"),
        ([module(name="named_predictors")], "modules[0].name", "reserved"),
        ([module(name="save")], "modules[0].name", "reserved"),
        ([module(name="m" * 65)], "modules[0].name", "longer than 64"),
        ([module(), module(signature="b -> c")], "modules[1].name", "duplicate module name 'm'"),
        ([module(signature=["a", "b"])], "modules[0].signature", "must be a string"),
        ([module(signature="a, b")], "modules[0].signature", "exactly one '->'"),
        ([module(signature="a -> b -> c")], "modules[0].signature", "exactly one '->'"),
        ([module(signature=" -> b")], "modules[0].signature", "at least one input field"),
        ([module(signature="a -> ")], "modules[0].signature", "at least one output field"),
        ([module(signature="a,, b -> c")], "modules[0].signature", "empty input field name"),
        ([module(signature="a -> b,")], "modules[0].signature", "empty output field name"),
        ([module(signature="a b -> c")], "modules[0].signature", "ASCII identifier"),
        ([module(signature="1a -> c")], "modules[0].signature", "ASCII identifier"),
        ([module(signature="_a -> c")], "modules[0].signature", "must not start with '_'"),
        ([module(signature="class -> c")], "modules[0].signature", "Python keyword"),
        ([module(signature="a -> reasoning")], "modules[0].signature", "'reasoning' is reserved"),
        ([module(signature="signature -> b")], "modules[0].signature", "'signature' is reserved"),
        ([module(signature="a -> model_output")], "modules[0].signature", "reserved"),
        ([module(signature="a: dict -> b")], "modules[0].signature", "allowed types: str, int"),
        ([module(signature="a: dict[str, int] -> b")], "modules[0].signature", "'dict[str, int]'"),
        ([module(signature="a: Optional[str] -> b")], "modules[0].signature", "allowed types"),
        ([module(signature="a -> a")], "modules[0].signature", "'a' appears more than once"),
        ([module(signature="a, a -> b")], "modules[0].signature", "more than once"),
        ([module(instructions=["x"])], "modules[0].instructions", "must be a string"),
        ([module(fields=["a"])], "modules[0].fields", "must be a mapping"),
        ([module(fields={"zz": "?"})], "modules[0].fields.zz", "not a field"),
        ([module(fields={"a": 1})], "modules[0].fields.a", "must be a string"),
        (
            [module(fields={"a": {"desc": "x", "prefx": "A:"}})],
            "modules[0].fields.a.prefx",
            "unknown key",
        ),
        (
            [module(fields={"a": {"__class__": "x"}})],
            "modules[0].fields.a.__class__",
            "unknown key",
        ),
        ([module(fields={"a": {"desc": 1}})], "modules[0].fields.a.desc", "must be a string"),
        (
            [module(fields={"a": {"prefix": ["A:"]}})],
            "modules[0].fields.a.prefix",
            "must be a string",
        ),
        ([module(fields={"zz": {"desc": "x"}})], "modules[0].fields.zz", "not a field"),
        (
            [module(name="one", signature="a -> b"), module(name="two", signature="a -> b")],
            "modules[1].signature",
            "'b' is already produced by module 'one'",
        ),
        (
            [module(name="one", signature="b -> c"), module(name="two", signature="a -> b")],
            "modules[0].signature",
            "'b' is produced by a later module 'two'",
        ),
        (
            [module(name="one", signature="a -> b: int"), module(name="two", signature="b -> c")],
            "modules[1].signature",
            "'b' is str here but int in module 'one'",
        ),
    ],
)
def test_module_errors(modules, key, fragment):
    error = parse_error(spec_dict(*modules))
    assert error.key == key, str(error)
    assert fragment in error.message, str(error)


def test_a_document_that_is_too_large_or_too_deep_is_refused():
    too_large = parse_error("x" * 300_000)
    assert (too_large.key, too_large.message) == ("(document)", "longer than 200000 characters")
    too_deep = parse_error('{"name": ' + "[" * 60_000 + "]" * 60_000 + "}")
    assert (too_deep.key, too_deep.message) == ("(document)", "invalid JSON: nested too deeply")


def test_invalid_utf8_bytes_are_a_document_error():
    error = parse_error(b'{"name": "\xff"}')
    assert error.key == "(document)"
    assert "UTF-8" in error.message


@pytest.mark.parametrize(
    "signature",
    [
        "__import__('os').system('touch /tmp/pwned') -> y",
        "a: eval('1') -> b",
        "a: __import__('os').system('x') -> b",
        "a: Field(default=__import__('os')) -> b",
        "a: os.system -> b",
        "a): pass\nimport os\ndef g(b -> c",
        "a: typing.Any -> b",
        "a: 'str' -> b",
    ],
)
def test_it_refuses_signatures_that_are_code(signature, monkeypatch):
    def explode(*args):
        raise AssertionError("a spec executed code")

    monkeypatch.setattr(os, "system", explode)
    error = parse_error(spec_dict(module(signature=signature)))
    assert error.key == "modules[0].signature"


def test_reserved_names_still_cover_dspy_attributes():
    def public(obj):
        return {name for name in dir(obj) if not name.startswith("_")}

    module_attrs = public(dspy.Module()) | {"forward", "aforward"}
    assert module_attrs <= RESERVED_MODULE_NAMES
    field_attrs = public(dspy.Example()) | public(dspy.Prediction()) | public(dspy.Signature)
    uncovered = {name for name in field_attrs if not name.startswith("model_")}
    assert uncovered <= RESERVED_FIELD_NAMES


# --- building and running --------------------------------------------------------------------


def test_it_builds_signatures_with_types_descriptions_and_instructions():
    program = build_program(parse_program_spec(SENTIMENT_JSON))
    signature = program.classify.predict.signature
    assert list(signature.input_fields) == ["text"]
    assert list(signature.output_fields) == ["reasoning", "sentiment"]
    assert signature.instructions == "Classify the sentiment of the text as positive or negative."
    assert signature.input_fields["text"].json_schema_extra["desc"] == "a product review"

    typed = build_program(parse_program_spec(TWO_STEP_YAML))
    assert typed.extract.signature.output_fields["facts"].annotation == list[str]
    assert typed.extract.signature.output_fields["count"].annotation is int


def test_it_renders_the_same_messages_as_dspys_own_signature_string():
    """bftweb's signatures must produce DSPy-identical prompts (and so training data)."""
    spec = parse_program_spec(
        spec_dict(module(signature="question, n: int -> answer", instructions="Answer."))
    )
    ours = build_program(spec).m.signature
    theirs = dspy.Signature("question, n: int -> answer", "Answer.")
    adapter = dspy.ChatAdapter()
    inputs = {"question": "why?", "n": 2}
    assert adapter.format(ours, [], inputs) == adapter.format(theirs, [], inputs)


def test_a_two_module_program_runs_in_sequence():
    program = build_program(parse_program_spec(TWO_STEP_YAML))
    lm = DummyLM(
        [
            {"facts": ["Paris is in France"], "count": 1},
            {"reasoning": "The fact says so.", "answer": "Paris"},
        ]
    )
    with dspy.context(lm=lm):
        prediction = program(question="Capital of France?", context="Paris is in France.")

    assert prediction.facts == ["Paris is in France"]
    assert prediction.count == 1
    assert prediction.answer == "Paris"
    assert set(prediction.keys()) == {"facts", "count", "answer"}
    second_prompt = lm.history[1]["messages"][-1]["content"]
    assert "Paris is in France" in second_prompt  # module 2 read module 1's output
    assert "[[ ## context ## ]]" not in second_prompt  # and only the fields it declares


def test_a_program_ignores_extra_inputs_and_requires_its_own():
    program = build_program(parse_program_spec(spec_dict(module(signature="a -> b"))))
    with dspy.context(lm=DummyLM([{"b": "ok"}])):
        assert program(a="x", unused="y").b == "ok"
    with pytest.raises(ValueError, match="missing program input"):
        program(b="x")


def test_a_failing_module_call_propagates():
    program = build_program(parse_program_spec(TWO_STEP_YAML))
    lm = DummyLM([{"wrong_field": "x"}])
    adapter = dspy.ChatAdapter(use_json_adapter_fallback=False)
    with dspy.context(lm=lm, adapter=adapter), pytest.raises(AdapterParseError):
        program(question="q", context="c")


def test_saved_state_loads_back_into_a_new_program(tmp_path):
    spec = parse_program_spec(TWO_STEP_YAML)
    program = build_program(spec)
    program.answer.predict.demos = [
        dspy.Example(question="q", facts=["f"], reasoning="r", answer="a").with_inputs(
            "question", "facts"
        )
    ]
    program.extract.signature = program.extract.signature.with_instructions("Better instructions.")
    path = tmp_path / "program.json"
    program.save(str(path))
    saved = json.loads(path.read_text())
    assert set(saved) == {"extract", "answer.predict", "metadata"}

    loaded = SpecProgram(spec)
    loaded.load(str(path))
    assert loaded.dump_state() == program.dump_state()
    assert loaded.extract.signature.instructions == "Better instructions."
    assert loaded.answer.predict.demos[0]["answer"] == "a"
    assert loaded.spec == spec


# --- fit to a trainset -----------------------------------------------------------------------


def test_check_fields_reports_missing_inputs_and_labels():
    spec = parse_program_spec(TWO_STEP_YAML)
    assert check_fields(spec, ["question", "context", "answer"], ["answer"]) == []
    problems = check_fields(spec, ["question", "answer"], ["answer", "label"])
    assert problems == [
        "program input 'context' is not a trainset field (trainset fields: question, answer)",
        "label field 'label' is not a trainset field (trainset fields: question, answer)",
    ]
    assert check_fields(spec, []) == [
        "program input 'question' is not a trainset field (trainset fields: none)",
        "program input 'context' is not a trainset field (trainset fields: none)",
    ]


@pytest.mark.slow
def test_it_parses_and_checks_specs_without_importing_dspy():
    """The web process validates specs as users type: that must not pull DSPy in."""
    import subprocess
    import sys

    code = (
        "import sys; from jobs.engine.programs import parse_program_spec, check_fields; "
        f"spec = parse_program_spec({SENTIMENT_JSON!r}); check_fields(spec, ['text']); "
        "print('dspy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
