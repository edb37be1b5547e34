"""Streaming, validated trainset readers for JSONL and CSV uploads.

Files are read one physical line at a time (bytes split on ``\\n``, which never occurs inside a
UTF-8 multi-byte sequence) and each line is decoded on its own, so memory stays bounded by the
longest row, invalid UTF-8 is reported with its line number, and a UTF-8 BOM is dropped. Bytes
are counted as they are read: a declared size is never trusted. CSV records are parsed by the
``csv`` module from those lines, so quoted newlines work and each record knows its physical lines.

Every problem is a ``RowError`` naming the line (JSONL), the row (CSV) and the column. Problems
with the file as a whole (too large, too many rows, a broken header, malformed CSV quoting) end
the iteration.
"""

from __future__ import annotations

import csv
import json
import math
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import PurePath
from typing import Any, BinaryIO, NamedTuple

FORMATS = ("jsonl", "csv")
SAMPLE_SIZE = 20
_BOM = b"\xef\xbb\xbf"
_FLAT_VALUES_ONLY = "is not supported: use text, a number, true/false, null or a list of those"
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}


@dataclass(frozen=True)
class TrainsetLimits:
    max_bytes: int = 50 * 1024 * 1024
    max_rows: int = 200_000
    max_field_chars: int = 20_000
    max_fields: int = 200  # distinct field names (CSV columns, JSONL keys) in the whole file


@dataclass
class RowError:
    """One problem. ``location`` is "line N" (JSONL), "row N" (CSV), "header" or "file"."""

    location: str
    column: str | None
    message: str

    def __post_init__(self) -> None:
        if self.column is not None:  # a field name from the file: shown and stored, so made safe
            self.column = escape_unstorable(self.column)

    def __str__(self) -> str:
        where = self.location if self.column is None else f"{self.location}, column {self.column!r}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class FieldStats:
    name: str
    type: str  # "string" | "number" | "boolean" | "list" | "mixed"
    fill_rate: float  # non-empty values / valid rows
    filled: int  # non-empty values


@dataclass
class TrainsetReport:
    row_count: int = 0  # data rows read (blank lines are not rows)
    valid_count: int = 0
    error_count: int = 0  # all errors, including those beyond ``errors``
    errors: list[RowError] = field(default_factory=list)  # first max_errors, + file-level ones
    fields: list[FieldStats] = field(default_factory=list)  # by first appearance
    sample: list[dict[str, Any]] = field(default_factory=list)  # the first valid rows
    required_fields: list[str] = field(default_factory=list)
    # Valid rows that lack each field or hold null there (a field in every row is 0).
    missing_counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    @property
    def field_names(self) -> list[str]:
        return [stats.name for stats in self.fields]

    @property
    def extra_fields(self) -> list[str]:
        """Fields beyond the required ones (kept in the rows; empty when none were required)."""
        if not self.required_fields:
            return []
        return [name for name in self.field_names if name not in self.required_fields]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["errors"] = [{**asdict(error), "text": str(error)} for error in self.errors]
        return data


class _Stop(Exception):
    """A problem with the whole file: iteration ends after reporting ``errors``."""

    def __init__(self, *errors: RowError) -> None:
        super().__init__(errors)
        self.errors = list(errors)


# --- public API ------------------------------------------------------------------------------


def detect_format(filename: str) -> str:
    """Map a file name to "jsonl" (.jsonl, .ndjson, .json as JSON Lines) or "csv" (.csv)."""
    suffix = PurePath(filename).suffix.lower()
    if suffix not in _EXTENSIONS:
        shown = repr(suffix) if suffix else "no extension"
        raise ValueError(
            f"unsupported file type ({shown}): upload .jsonl, .ndjson, .json (JSON Lines) or .csv"
        )
    return _EXTENSIONS[suffix]


class PlacedRow(NamedTuple):
    """One data row and where it is: ``place`` is the number its errors name ("line N" in JSONL,
    "row N" in CSV: :func:`place_name`)."""

    row_number: int
    place: int
    row: dict[str, Any] | None
    errors: list[RowError]


def place_name(fmt: str, place: int) -> str:
    return f"line {place}" if fmt == "jsonl" else f"row {place}"


def iter_rows(
    stream: BinaryIO,
    fmt: str,
    *,
    limits: TrainsetLimits | None = None,
    required_fields: Iterable[str] = (),
) -> Iterator[tuple[int, dict[str, Any] | None, list[RowError]]]:
    """Yield ``(row_number, row, errors)`` per data row; ``row`` is None exactly when ``errors``.

    ``row_number`` counts data rows from 1 (JSONL blank lines and the CSV header are not rows).
    A problem with the whole file is yielded last as ``(0, None, errors)``.
    JSONL values keep their JSON types; CSV values are strings. Extra fields are kept.
    """
    for placed in iter_placed_rows(stream, fmt, limits=limits, required_fields=required_fields):
        yield placed.row_number, placed.row, placed.errors


def iter_placed_rows(
    stream: BinaryIO,
    fmt: str,
    *,
    limits: TrainsetLimits | None = None,
    required_fields: Iterable[str] = (),
) -> Iterator[PlacedRow]:
    """:func:`iter_rows` with each row's place in the file; a file-level problem has place 0."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown trainset format {fmt!r}; expected one of {', '.join(FORMATS)}")
    limits = limits or TrainsetLimits()
    required = tuple(dict.fromkeys(required_fields))
    rows = (
        _iter_jsonl(stream, limits, required)
        if fmt == "jsonl"
        else _iter_csv(stream, limits, required)
    )
    try:
        yield from rows
    except _Stop as stop:
        yield PlacedRow(0, 0, None, stop.errors)


def validate_trainset(
    stream: BinaryIO,
    fmt: str,
    *,
    limits: TrainsetLimits | None = None,
    required_fields: Iterable[str] = (),
    max_errors: int = 50,
) -> TrainsetReport:
    """Read the whole file once and summarize it; memory does not grow with the row count."""
    required = list(dict.fromkeys(required_fields))
    report = TrainsetReport(required_fields=required)
    tallies: dict[str, _FieldTally] = {}
    for row_number, row, errors in iter_rows(stream, fmt, limits=limits, required_fields=required):
        if row_number:
            report.row_count += 1
        report.error_count += len(errors)
        if row_number:
            report.errors.extend(errors[: max(0, max_errors - len(report.errors))])
        else:  # a file-level error is always kept: it decides whether anything can be imported
            report.errors.extend(errors)
        if row is None:
            continue
        report.valid_count += 1
        if len(report.sample) < SAMPLE_SIZE:
            report.sample.append(row)
        for name, value in row.items():
            tallies.setdefault(name, _FieldTally(name)).add(value)
    report.fields = [tally.stats(report.valid_count) for tally in tallies.values()]
    report.missing_counts = {
        name: report.valid_count - tally.not_null for name, tally in tallies.items()
    }
    return report


def lacks_fields(row: dict[str, Any], names: Iterable[str]) -> list[str]:
    """The ``names`` that ``row`` lacks or holds null for."""
    return [name for name in names if row.get(name) is None]


def escape_unstorable(text: str) -> str:
    """``text`` with NUL characters and unpaired surrogates written as ``\\uXXXX`` escapes."""
    return _UNSTORABLE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def split_indices(n: int, *, dev_ratio: float, seed: int) -> tuple[list[int], list[int]]:
    """Split ``range(n)`` into sorted (train, dev) index lists with a seeded shuffle.

    ``round(n * dev_ratio)`` rows go to dev, but at least one row stays in train when ``n > 0``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    if not (isinstance(dev_ratio, int | float) and 0 <= dev_ratio <= 0.9):
        raise ValueError(f"dev_ratio must be between 0 and 0.9, not {dev_ratio!r}")
    indices = list(range(n))
    random.Random(seed).shuffle(indices)
    dev_size = min(round(n * dev_ratio), max(n - 1, 0))
    return sorted(indices[dev_size:]), sorted(indices[:dev_size])


class _FieldTally:
    """What one field's values look like across the valid rows."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.kinds: set[str] = set()
        self.filled = 0
        self.not_null = 0

    def add(self, value: Any) -> None:
        if value is not None:
            self.not_null += 1
        if isinstance(value, str):
            if value.strip():
                self.filled += 1
                self.kinds.add("string")
        elif value is not None and value != []:
            self.filled += 1
            self.kinds.add(_kind(value))

    def stats(self, rows: int) -> FieldStats:
        kind = "mixed" if len(self.kinds) > 1 else next(iter(self.kinds), "string")
        fill_rate = self.filled / rows if rows else 0.0
        return FieldStats(self.name, kind, fill_rate, self.filled)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "list"
    return "string"


# --- reading lines ---------------------------------------------------------------------------


def _read_lines(stream: BinaryIO, max_bytes: int) -> Iterator[tuple[int, bytes]]:
    """Physical lines (with their line ending) numbered from 1, never more than max_bytes in all."""
    consumed = 0
    line_number = 0
    while True:
        chunk = stream.readline(max_bytes - consumed + 1)
        if not chunk:
            return
        consumed += len(chunk)
        if consumed > max_bytes:
            raise _Stop(RowError("file", None, f"larger than the limit of {max_bytes:,} bytes"))
        line_number += 1
        if line_number == 1:
            chunk = chunk.removeprefix(_BOM)
        yield line_number, chunk


def _decode(raw: bytes) -> tuple[str, str | None]:
    """The decoded line and None, or a replacement-decoded line and the UTF-8 error message."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        message = f"invalid UTF-8 (byte {e.start + 1} of the line)"
        return raw.decode("utf-8", errors="replace"), message


def _check_row_limit(row_number: int, limits: TrainsetLimits) -> None:
    if row_number > limits.max_rows:
        raise _Stop(RowError("file", None, f"more than {limits.max_rows:,} rows"))


def _check_values(
    row: dict[str, Any], location: str, limits: TrainsetLimits, required: tuple[str, ...]
) -> list[RowError]:
    errors = []
    for name in required:
        if name not in row:
            errors.append(RowError(location, name, "missing field"))
        elif row[name] is None:
            errors.append(RowError(location, name, "null value for a required field"))
    for name, value in row.items():
        problem = _unstorable_problem(name, value)
        if problem:
            errors.append(RowError(location, name, problem))
            continue
        chars = _char_count(value)
        if chars > limits.max_field_chars:
            errors.append(
                RowError(
                    location, name, f"{chars:,} characters; the limit is {limits.max_field_chars:,}"
                )
            )
    return errors


# What neither PostgreSQL (text, jsonb) nor a web page can hold, though JSON can spell it.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _unstorable_char(text: str) -> str | None:
    found = _UNSTORABLE.search(text)
    return found.group() if found else None


def _unstorable_problem(name: str, value: Any) -> str | None:
    """Why a field (its name or its value) cannot be stored, or None."""
    char = _unstorable_char(name)
    if char is not None:
        return f"the field name {_describe_char(char)}"
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str) and (char := _unstorable_char(item)) is not None:
            return f"the value {_describe_char(char)}"
        if isinstance(item, float) and not math.isfinite(item):
            return "a number too large to store (it reads as infinity); numbers must be finite"
    return None


def _describe_char(char: str) -> str:
    if char == "\x00":
        return "contains a NUL character (\\u0000), which cannot be stored"
    return f"contains an unpaired surrogate (\\u{ord(char):04x}), which is not valid Unicode"


def _char_count(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_char_count(item) for item in value)
    return len(str(value))


class _FieldNames:
    """Distinct field names seen so far, at most ``limits.max_fields``."""

    def __init__(self, limits: TrainsetLimits) -> None:
        self.limit = limits.max_fields
        self.names: set[str] = set()

    def add(self, names: Iterable[str]) -> None:
        self.names.update(names)
        if len(self.names) > self.limit:
            raise _Stop(RowError("file", None, f"more than {self.limit} distinct fields"))


# --- JSONL -----------------------------------------------------------------------------------


def _iter_jsonl(
    stream: BinaryIO, limits: TrainsetLimits, required: tuple[str, ...]
) -> Iterator[PlacedRow]:
    row_number = 0
    field_names = _FieldNames(limits)
    for line_number, raw in _read_lines(stream, limits.max_bytes):
        text, decode_error = _decode(raw)
        if not text.strip():
            continue
        row_number += 1
        _check_row_limit(row_number, limits)
        location = f"line {line_number}"
        if decode_error:
            yield PlacedRow(row_number, line_number, None, [RowError(location, None, decode_error)])
            continue
        row, errors = _parse_json_object(text.rstrip("\r\n"), location, line_number)
        if row is not None:
            field_names.add(row)
            errors += _check_values(row, location, limits, required)
        yield PlacedRow(row_number, line_number, (row if not errors else None), errors)
    if row_number == 0:
        raise _Stop(RowError("file", None, "no rows"))


def _parse_json_object(
    text: str, location: str, line_number: int
) -> tuple[dict[str, Any] | None, list[RowError]]:
    try:
        data = _JSON_DECODER.decode(text)
    except json.JSONDecodeError as e:
        hint = _json_array_hint(text, line_number)
        return None, [RowError(location, None, f"invalid JSON: {e.msg} (column {e.colno}){hint}")]
    except _DuplicateKey as e:
        return None, [RowError(location, e.key, "duplicate key")]
    except ValueError as e:  # NaN / Infinity
        return None, [RowError(location, None, f"invalid JSON: {e}")]
    except RecursionError:
        return None, [RowError(location, None, "invalid JSON: nested too deeply")]
    if not isinstance(data, dict):
        hint = _json_array_hint(text, line_number)
        return None, [
            RowError(location, None, f"expected a JSON object, got {_json_type(data)}{hint}")
        ]
    errors = []
    for name, value in data.items():
        if not name.strip():
            errors.append(RowError(location, name, "empty field name"))
        if not _is_flat(value):
            errors.append(RowError(location, name, f"{_json_type(value)} {_FLAT_VALUES_ONLY}"))
    return (None if errors else data), errors


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise _DuplicateKey(key)
        data[key] = value
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


# Refuses duplicate keys and NaN/Infinity (not JSON, and not storable in PostgreSQL's jsonb).
_JSON_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_refuse_constant)


def _is_flat(value: Any) -> bool:
    """A scalar, or a list of scalars."""
    if isinstance(value, list):
        return all(not isinstance(item, dict | list) for item in value)
    return not isinstance(value, dict)


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _json_array_hint(text: str, line_number: int) -> str:
    if line_number == 1 and text.lstrip().startswith("["):
        return "; the file must be JSON Lines (one object per line), not a JSON array"
    return ""


# --- CSV -------------------------------------------------------------------------------------


def _iter_csv(
    stream: BinaryIO, limits: TrainsetLimits, required: tuple[str, ...]
) -> Iterator[PlacedRow]:
    bad_lines: dict[int, str] = {}  # line number -> UTF-8 error, filled as lines are read
    reader = csv.reader(
        _decoded_lines(_read_lines(stream, limits.max_bytes), bad_lines), strict=True
    )
    header = _read_header(reader, bad_lines, limits, required)
    row_number = 0
    while True:
        first_line = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            message = f"invalid CSV: {e}{_lines_note(first_line, reader.line_num)}"
            if "unexpected end of data" in str(e):
                message += "; a quoted field is never closed"
            raise _Stop(RowError(f"row {row_number + 1}", None, message)) from e
        if _is_blank(record):
            continue
        row_number += 1
        _check_row_limit(row_number, limits)
        location = f"row {row_number}"
        lines = range(first_line, reader.line_num + 1)
        same_line = first_line == reader.line_num == row_number + 1
        note = "" if same_line else _lines_note(first_line, reader.line_num)
        errors = _csv_row_errors(record, header, location, lines, bad_lines)
        row = dict(zip(header, record, strict=False))
        if not errors:
            errors = _check_values(row, location, limits, required)
        for error in errors:
            error.message += note
        bad_lines.clear()  # every line read so far belongs to this row or an earlier one
        yield PlacedRow(row_number, row_number, (row if not errors else None), errors)
    if row_number == 0:
        raise _Stop(RowError("file", None, "no rows after the header"))


def _decoded_lines(lines: Iterator[tuple[int, bytes]], bad_lines: dict[int, str]) -> Iterator[str]:
    for line_number, raw in lines:
        text, error = _decode(raw)
        if error:
            bad_lines[line_number] = error
        yield text


def _read_header(
    reader: Any, bad_lines: dict[int, str], limits: TrainsetLimits, required: tuple[str, ...]
) -> list[str]:
    try:
        record = next(reader)
        while _is_blank(record):
            record = next(reader)
    except StopIteration:
        raise _Stop(RowError("file", None, "empty file: a header row is required")) from None
    except csv.Error as e:
        raise _Stop(RowError("header", None, f"invalid CSV: {e}")) from e
    if bad_lines:
        raise _Stop(*(RowError("header", None, message) for message in bad_lines.values()))
    header = [name.strip() for name in record]
    if len(header) > limits.max_fields:
        raise _Stop(RowError("header", None, f"more than {limits.max_fields} columns"))
    errors = [
        RowError("header", None, f"column {i} has no name")
        for i, name in enumerate(header, 1)
        if not name
    ]
    errors += [
        RowError("header", name, f"the column name {_describe_char(char)}")
        for name in header
        if (char := _unstorable_char(name)) is not None
    ]
    seen: set[str] = set()
    for name in header:
        if name and name in seen:
            errors.append(RowError("header", name, "duplicate column name"))
        seen.add(name)
    errors += [
        RowError("header", name, "missing required column") for name in required if name not in seen
    ]
    if errors:
        raise _Stop(*errors)
    return header


def _csv_row_errors(
    record: list[str], header: list[str], location: str, lines: range, bad_lines: dict[int, str]
) -> list[RowError]:
    errors = [RowError(location, None, bad_lines[n]) for n in lines if n in bad_lines]
    if len(record) != len(header):
        errors.append(
            RowError(location, None, f"{_fields(len(record))}, but the header has {len(header)}")
        )
    return errors


def _is_blank(record: list[str]) -> bool:
    """An empty line (or one of only spaces) between rows is not a row."""
    return not record or (len(record) == 1 and not record[0].strip())


def _fields(count: int) -> str:
    return "1 field" if count == 1 else f"{count} fields"


def _lines_note(first: int, last: int) -> str:
    return f" (line {first})" if first == last else f" (lines {first}-{last})"
