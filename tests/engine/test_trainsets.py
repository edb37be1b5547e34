"""Trainset readers: happy paths, every error's location, limits, bounded memory, splits."""

from __future__ import annotations

import io
import json
import tracemalloc

import pytest

from jobs.engine.trainsets import (
    FieldStats,
    RowError,
    TrainsetLimits,
    detect_format,
    iter_rows,
    split_indices,
    validate_trainset,
)

BOM = b"\xef\xbb\xbf"


def rows(data: bytes, fmt: str, **kwargs) -> list[tuple[int, dict | None, list[str]]]:
    return [
        (number, row, [str(error) for error in errors])
        for number, row, errors in iter_rows(io.BytesIO(data), fmt, **kwargs)
    ]


def errors_of(data: bytes, fmt: str, **kwargs) -> list[str]:
    return [error for _, _, errors in rows(data, fmt, **kwargs) for error in errors]


def report_of(data: bytes, fmt: str, **kwargs):
    return validate_trainset(io.BytesIO(data), fmt, **kwargs)


# --- happy paths -----------------------------------------------------------------------------


def test_jsonl_with_bom_blank_lines_and_typed_values():
    data = BOM + (
        b'{"question": "2+2?", "answer": "4", "n": 4, "ok": true, "tags": ["math"]}\r\n'
        b"\n"
        b"   \n"
        b'{"question": "Capital of France?", "answer": "Paris", "n": 1.5, "ok": false, "tags": []}\n'
    )
    assert rows(data, "jsonl") == [
        (1, {"question": "2+2?", "answer": "4", "n": 4, "ok": True, "tags": ["math"]}, []),
        (
            2,
            {
                "question": "Capital of France?",
                "answer": "Paris",
                "n": 1.5,
                "ok": False,
                "tags": [],
            },
            [],
        ),
    ]


def test_csv_with_bom_crlf_and_quoted_newlines():
    data = BOM + b'question,answer\r\n"Say ""hi""\r\non two lines",hi\r\nplain,"a, b"\r\n'
    assert rows(data, "csv") == [
        (1, {"question": 'Say "hi"\r\non two lines', "answer": "hi"}, []),
        (2, {"question": "plain", "answer": "a, b"}, []),
    ]


def test_csv_header_names_are_stripped_and_blank_lines_skipped():
    data = b"\n question , answer\n\nq1,a1\n\nq2,a2\n"
    assert [row for _, row, _ in rows(data, "csv")] == [
        {"question": "q1", "answer": "a1"},
        {"question": "q2", "answer": "a2"},
    ]


def test_a_report_summarizes_fields_samples_and_extra_fields():
    lines = [{"question": f"q{i}", "answer": str(i), "score": i} for i in range(30)]
    lines[3]["score"] = "high"
    lines[4]["answer"] = ""
    lines[5]["note"] = "extra"
    data = "\n".join(json.dumps(line) for line in lines).encode()
    report = report_of(data, "jsonl", required_fields=["question", "answer"])
    assert (report.row_count, report.valid_count, report.error_count) == (30, 30, 0)
    assert report.ok
    assert report.fields == [
        FieldStats("question", "string", 1.0, 30),
        FieldStats("answer", "string", 29 / 30, 29),
        FieldStats("score", "mixed", 1.0, 30),
        FieldStats("note", "string", 1 / 30, 1),
    ]
    assert report.extra_fields == ["score", "note"]
    assert len(report.sample) == 20
    assert report.sample[0] == {"question": "q0", "answer": "0", "score": 0}
    assert json.loads(json.dumps(report.to_dict()))["fields"][0]["name"] == "question"


def test_field_types_are_inferred_from_non_empty_values():
    data = b'{"a": 1, "b": true, "c": ["x"], "d": null, "e": "x"}\n{"a": 2.5, "b": false, "c": [], "d": null, "e": 3}\n'
    report = report_of(data, "jsonl")
    assert [(f.name, f.type, f.fill_rate) for f in report.fields] == [
        ("a", "number", 1.0),
        ("b", "boolean", 1.0),
        ("c", "list", 0.5),
        ("d", "string", 0.0),
        ("e", "mixed", 1.0),
    ]


# --- JSONL errors ----------------------------------------------------------------------------


def test_malformed_json_names_its_physical_line_and_column():
    data = b'{"q": "a"}\n\n{"q": "b" "x": 1}\n{"q": "c"}\n'
    assert rows(data, "jsonl") == [
        (1, {"q": "a"}, []),
        (2, None, ["line 3: invalid JSON: Expecting ',' delimiter (column 11)"]),
        (3, {"q": "c"}, []),
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"[1, 2]", "line 1: expected a JSON object, got a list; the file must be JSON Lines"),
        (b'"text"', "line 1: expected a JSON object, got a string"),
        (b"42", "line 1: expected a JSON object, got a number"),
        (b'{"q": {"nested": 1}}', "line 1, column 'q': an object is not supported"),
        (b'{"q": [[1]]}', "line 1, column 'q': a list is not supported"),
        (b'{"q": NaN}', "line 1: invalid JSON: NaN is not allowed"),
        (b'{"q": 1, "q": 2}', "line 1, column 'q': duplicate key"),
        (b'{"": 1}', "line 1, column '': empty field name"),
        (b'{"q": "caf\xe9"}', "line 1: invalid UTF-8 (byte 11 of the line)"),
    ],
)
def test_jsonl_row_errors(line, expected):
    (error,) = errors_of(line + b"\n", "jsonl")
    assert error.startswith(expected)


def test_a_json_array_file_gets_a_hint():
    (error, *_) = errors_of(b'[\n  {"q": 1}\n]\n', "jsonl")
    assert error.startswith(
        "line 1: invalid JSON: Expecting value (column 2); the file must be JSON Lines"
    )


def test_missing_and_null_required_fields_are_named_and_extra_fields_kept():
    data = b'{"question": "q", "answer": "a", "extra": 1}\n{"question": "q"}\n{"question": null, "answer": "a"}\n'
    assert rows(data, "jsonl", required_fields=["question", "answer"]) == [
        (1, {"question": "q", "answer": "a", "extra": 1}, []),
        (2, None, ["line 2, column 'answer': missing field"]),
        (3, None, ["line 3, column 'question': null value for a required field"]),
    ]


def test_bad_utf8_lines_are_reported_and_reading_goes_on():
    data = b'{"q": "ok"}\n{"q": "\xff\xfe"}\n{"q": "fine"}\n'
    assert rows(data, "jsonl") == [
        (1, {"q": "ok"}, []),
        (2, None, ["line 2: invalid UTF-8 (byte 8 of the line)"]),
        (3, {"q": "fine"}, []),
    ]


# --- CSV errors ------------------------------------------------------------------------------


def test_ragged_csv_rows_name_the_row_and_the_physical_line_when_they_differ():
    data = b'q,a\n"two\nlines",x\ntoo,many,fields\nfew\nok,ok\n'
    assert rows(data, "csv") == [
        (1, {"q": "two\nlines", "a": "x"}, []),
        (2, None, ["row 2: 3 fields, but the header has 2 (line 4)"]),
        (3, None, ["row 3: 1 field, but the header has 2 (line 5)"]),
        (4, {"q": "ok", "a": "ok"}, []),
    ]


def test_csv_rows_on_their_expected_line_carry_no_line_note():
    assert errors_of(b"q,a\nx\n", "csv") == ["row 1: 1 field, but the header has 2"]


def test_a_multi_line_csv_row_reports_its_line_range():
    data = b'q,a\n"x\ny",1,extra\n'
    assert errors_of(data, "csv") == ["row 1: 3 fields, but the header has 2 (lines 2-3)"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", ["file: empty file: a header row is required"]),
        (b"q,a\n", ["file: no rows after the header"]),
        (b"q,,a\n1,2,3\n", ["header: column 2 has no name"]),
        (b"q,a,q\n1,2,3\n", ["header, column 'q': duplicate column name"]),
        (b"q\xff,a\n1,2\n", ["header: invalid UTF-8 (byte 2 of the line)"]),
        (
            b'q,a\n1,"open\n2,3\n',
            [
                "row 1: invalid CSV: unexpected end of data (lines 2-3); a quoted field is never closed"
            ],
        ),
        (b'q,a\n"x"y,1\n', ["row 1: invalid CSV: ',' expected after '\"' (line 2)"]),
    ],
)
def test_csv_file_errors_stop_the_reading(data, expected):
    assert rows(data, "csv")[-1] == (0, None, expected)


def test_a_csv_header_lacking_a_required_column_is_one_error():
    assert rows(b"question\nq1\nq2\n", "csv", required_fields=["question", "answer"]) == [
        (0, None, ["header, column 'answer': missing required column"])
    ]


def test_bad_utf8_in_a_csv_row_names_the_row_and_line():
    data = b'q,a\n"multi\nline",x\nbad\xff,y\nok,z\n'
    assert rows(data, "csv") == [
        (1, {"q": "multi\nline", "a": "x"}, []),
        (2, None, ["row 2: invalid UTF-8 (byte 4 of the line) (line 4)"]),
        (3, {"q": "ok", "a": "z"}, []),
    ]


# --- limits ----------------------------------------------------------------------------------


def test_an_oversize_field_names_its_column():
    limits = TrainsetLimits(max_field_chars=10)
    assert errors_of(b'{"q": "short", "a": "' + b"x" * 11 + b'"}\n', "jsonl", limits=limits) == [
        "line 1, column 'a': 11 characters; the limit is 10"
    ]
    assert errors_of(b'q,a\nshort,"' + b"y" * 12 + b'"\n', "csv", limits=limits) == [
        "row 1, column 'a': 12 characters; the limit is 10"
    ]
    assert errors_of(b'{"tags": ["123456", "789012"]}\n', "jsonl", limits=limits) == [
        "line 1, column 'tags': 12 characters; the limit is 10"
    ]


def test_an_oversize_file_stops_with_an_error_whatever_its_declared_size():
    line = b'{"q": "0123456789"}\n'  # 20 bytes
    limits = TrainsetLimits(max_bytes=100)
    exact = rows(line * 5, "jsonl", limits=limits)
    assert [number for number, _, _ in exact] == [1, 2, 3, 4, 5]
    too_big = rows(line * 5 + b"\n", "jsonl", limits=limits)
    assert too_big[-1] == (0, None, ["file: larger than the limit of 100 bytes"])
    one_long_line = rows(b'{"q": "' + b"x" * 1000 + b'"}', "jsonl", limits=limits)
    assert one_long_line == [(0, None, ["file: larger than the limit of 100 bytes"])]


def test_the_row_limit_stops_with_an_error():
    limits = TrainsetLimits(max_rows=3)
    result = rows(b'{"q": 1}\n' * 3, "jsonl", limits=limits)
    assert [number for number, _, _ in result] == [1, 2, 3]
    result = rows(b"q\n" + b"x\n" * 5, "csv", limits=limits)
    assert result[-1] == (0, None, ["file: more than 3 rows"])
    assert len(result) == 4
    report = report_of(b'{"q": 1}\n' * 5, "jsonl", limits=limits)
    assert (report.row_count, report.valid_count, report.error_count) == (3, 3, 1)
    assert not report.ok


def test_the_distinct_field_limit_stops_with_an_error():
    limits = TrainsetLimits(max_fields=3)
    data = b"".join(json.dumps({f"k{i}": i}).encode() + b"\n" for i in range(5))
    assert rows(data, "jsonl", limits=limits)[-1] == (
        0,
        None,
        ["file: more than 3 distinct fields"],
    )
    assert errors_of(b"a,b,c,d\n1,2,3,4\n", "csv", limits=limits) == ["header: more than 3 columns"]


def test_an_empty_jsonl_file_is_an_error():
    assert rows(b"\n\n", "jsonl") == [(0, None, ["file: no rows"])]


def test_errors_beyond_max_errors_are_counted_not_kept():
    data = b'{"q": 1}\n' + b"not json\n" * 10
    report = report_of(data, "jsonl", max_errors=3)
    assert (report.row_count, report.valid_count, report.error_count) == (11, 1, 10)
    assert [error.location for error in report.errors] == ["line 2", "line 3", "line 4"]


def test_file_level_errors_are_kept_beyond_max_errors():
    data = b"not json\n" * 10 + b'{"q": 1}\n'
    report = report_of(data, "jsonl", max_errors=3, limits=TrainsetLimits(max_rows=10))
    assert report.error_count == 11
    assert [str(error) for error in report.errors][-1] == "file: more than 10 rows"
    assert len(report.errors) == 4


def test_a_100k_row_file_streams_in_bounded_memory(tmp_path):
    path = tmp_path / "big.jsonl"
    with path.open("w") as f:
        f.writelines(f'{{"question": "What is {i}?", "answer": "{i}"}}\n' for i in range(100_000))
    assert path.stat().st_size > 3_000_000

    tracemalloc.start()
    try:
        with path.open("rb") as stream:
            report = validate_trainset(stream, "jsonl", required_fields=["question", "answer"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (report.row_count, report.valid_count, report.error_count) == (100_000, 100_000, 0)
    assert peak < 1_000_000, f"peak {peak:,} bytes while streaming"


# --- formats and splits ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("data.jsonl", "jsonl"), ("D.NDJSON", "jsonl"), ("x.json", "jsonl"), ("rows.csv", "csv")],
)
def test_detect_format(name, fmt):
    assert detect_format(name) == fmt


@pytest.mark.parametrize(
    ("name", "fragment"), [("data.xlsx", "'.xlsx'"), ("README", "no extension")]
)
def test_detect_format_refuses_other_extensions(name, fragment):
    with pytest.raises(ValueError, match=fragment):
        detect_format(name)


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown trainset format 'xml'"):
        list(iter_rows(io.BytesIO(b""), "xml"))


def test_split_indices_is_deterministic_disjoint_and_complete():
    train, dev = split_indices(100, dev_ratio=0.25, seed=7)
    assert (train, dev) == split_indices(100, dev_ratio=0.25, seed=7)
    assert len(dev) == 25
    assert sorted(train + dev) == list(range(100))
    assert not set(train) & set(dev)
    assert train == sorted(train)
    assert split_indices(100, dev_ratio=0.25, seed=8) != (train, dev)


def test_split_indices_edge_cases():
    assert split_indices(0, dev_ratio=0.5, seed=0) == ([], [])
    assert split_indices(1, dev_ratio=0.9, seed=0) == ([0], [])
    assert split_indices(5, dev_ratio=0, seed=0) == ([0, 1, 2, 3, 4], [])
    train, dev = split_indices(3, dev_ratio=0.9, seed=1)
    assert (len(train), len(dev)) == (1, 2)


@pytest.mark.parametrize("ratio", [-0.1, 0.95, 1, float("nan"), "0.2"])
def test_split_indices_refuses_bad_ratios(ratio):
    with pytest.raises(ValueError, match="dev_ratio"):
        split_indices(10, dev_ratio=ratio, seed=0)


def test_row_error_text():
    assert str(RowError("line 17", None, "invalid JSON")) == "line 17: invalid JSON"
    assert (
        str(RowError("row 4", "question", "missing field"))
        == "row 4, column 'question': missing field"
    )
