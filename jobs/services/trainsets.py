"""Trainsets: upload, stream-validate and import a JSONL/CSV file, in the request or on a worker.

Memory stays bounded: the file is read twice as a stream (validate, then import), rows are
written with ``bulk_create`` in batches, and nothing holds every row. Small uploads are imported
in the request; uploads of at least ``BFT_TRAINSET_ASYNC_ROWS`` lines are copied to the shared
artifacts directory and imported by a worker as a ``TrainsetImport`` row (queued like every row,
jobs/services/queue.py; the worker's part is jobs/work/trainsets.py, with these same steps).
However the import ends, its trainset ends ready or failed and the stored file is removed
(``TrainsetImport.on_ended``). Progress is best effort, in the RQ job's meta.

A request whose declared body is over the upload limit is refused before any of it is read
(``request_too_large``): Django reads at most CONTENT_LENGTH bytes of a body.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from django.conf import settings
from django.db import transaction
from django.db.models import CharField
from django.template.defaultfilters import filesizeformat

from jobs.engine.trainsets import (
    RowError,
    TrainsetLimits,
    TrainsetReport,
    escape_unstorable,
    iter_placed_rows,
    split_indices,
    validate_trainset,
)
from jobs.http import declared_body_length
from jobs.models import Project, Status, Trainset, TrainsetImport, TrainsetRow
from jobs.services import queue

log = logging.getLogger(__name__)

BATCH_SIZE = 1000
MAX_ERRORS = 50
# Room for the multipart boundaries and the form's other fields around the file itself.
UPLOAD_FORM_OVERHEAD = 64 * 1024


def async_rows_threshold() -> int:
    return int(getattr(settings, "BFT_TRAINSET_ASYNC_ROWS", 100_000))


def trainset_limits() -> TrainsetLimits:
    return TrainsetLimits(
        max_bytes=int(settings.BFT_UPLOAD_MAX_BYTES),
        max_rows=int(settings.BFT_UPLOAD_MAX_ROWS),
        max_field_chars=int(settings.BFT_UPLOAD_MAX_FIELD_CHARS),
    )


def request_too_large(meta: dict[str, Any]) -> str | None:
    """Why a request must be refused unread (its declared body is over the upload limit), or None."""
    length = declared_body_length(meta)
    limit = int(settings.BFT_UPLOAD_MAX_BYTES)
    if length <= limit + UPLOAD_FORM_OVERHEAD:
        return None
    return (
        f"The upload is {filesizeformat(length)}; the limit is {filesizeformat(limit)} per file. "
        "It was refused before it was read, and nothing was imported."
    )


@dataclass
class ErrorLine:
    """One validation error as the page lists it: "line 3" (JSONL) / "row 3" (CSV) / "header" / "file"."""

    location: str
    column: str
    message: str

    def __str__(self) -> str:
        where = self.location + (f", column “{self.column}”" if self.column else "")
        return f"{where}: {self.message}"


class ImportAborted(Exception):
    """A problem with the whole file (too large, too many rows, bad CSV quoting): nothing is kept."""

    def __init__(self, errors: list[ErrorLine]) -> None:
        super().__init__("; ".join(map(str, errors)))
        self.errors = errors


@dataclass
class ImportOutcome:
    trainset: Trainset | None = None
    queued: bool = False
    errors: list[ErrorLine] = field(default_factory=list)
    error_count: int = 0
    row_count: int = 0  # rows read (valid or not)
    valid_count: int = 0
    queue_error: str = ""  # a background import that could not be queued (the trainset failed)

    @property
    def more_errors(self) -> int:
        return max(0, self.error_count - len(self.errors))


def error_line(error: RowError) -> ErrorLine:
    """An engine RowError as an ErrorLine (the engine already escaped what a page cannot show)."""
    return ErrorLine(
        location=str(error.location),
        column=escape_unstorable(error.column or ""),
        message=escape_unstorable(str(error.message)),
    )


FILE_LEVEL = ("file", "header")


# --- reading the upload ----------------------------------------------------------------------


class _ProgressRaw(io.RawIOBase):
    """A raw binary stream that reports how many bytes were read so far."""

    def __init__(self, fh: IO[bytes], on_read: Callable[[int], None]) -> None:
        self._fh = fh
        self._on_read = on_read
        self._read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._fh.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self._read += n
        self._on_read(self._read)
        return n


@contextmanager
def open_source(source: Any, on_read: Callable[[int], None] | None = None) -> Iterator[BinaryIO]:
    """A fresh binary stream over ``source`` (a path or a Django UploadedFile), from its start."""
    if isinstance(source, str | os.PathLike):
        fh: BinaryIO = open(source, "rb")  # noqa: SIM115 - closed below
        close = True
    elif hasattr(source, "temporary_file_path"):
        fh = open(source.temporary_file_path(), "rb")  # noqa: SIM115
        close = True
    else:
        # An in-memory upload (at most FILE_UPLOAD_MAX_MEMORY_SIZE): a private copy, because a
        # text wrapper in the engine may close the stream it was given.
        source.seek(0)
        fh = io.BytesIO(source.read())
        close = True
    try:
        if on_read is not None:
            yield io.BufferedReader(_ProgressRaw(fh, on_read), buffer_size=1 << 16)
        else:
            yield fh
    finally:
        if close:
            fh.close()


def count_lines(source: Any) -> int:
    """Non-empty lines in the file, counted in 1 MiB chunks (a cheap estimate of the row count)."""
    lines = 0
    last = b"\n"
    with open_source(source) as fh:
        while chunk := fh.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (0 if last == b"\n" else 1)


# --- the import --------------------------------------------------------------------------------


def validate(
    source: Any, fmt: str, *, on_read: Callable[[int], None] | None = None
) -> TrainsetReport:
    """The engine's streamed report: row_count, valid_count, errors (first 50), error_count, fields."""
    with open_source(source, on_read) as fh:
        return validate_trainset(fh, fmt, limits=trainset_limits(), max_errors=MAX_ERRORS)


def outcome_from_report(report: TrainsetReport) -> ImportOutcome:
    return ImportOutcome(
        errors=[error_line(e) for e in report.errors[:MAX_ERRORS]],
        error_count=report.error_count,
        row_count=report.row_count,
        valid_count=report.valid_count,
    )


def field_stats(report: TrainsetReport) -> list[dict[str, Any]]:
    """Per field: name, type, fill rate, filled rows, and rows that lack it or hold null."""
    return [
        {
            "name": f.name,
            "type": f.type,
            "fill_rate": f.fill_rate,
            "filled": f.filled,
            "missing": report.missing_counts.get(f.name, 0),
        }
        for f in report.fields
    ]


def refused(outcome: ImportOutcome, skip_bad_rows: bool) -> bool:
    """Nothing is imported when any row fails (unless skipping), the file itself fails, or no row is valid."""
    if outcome.valid_count == 0 and not outcome.error_count:
        outcome.errors, outcome.error_count = [ErrorLine("file", "", "the file holds no rows")], 1
    file_level = any(e.location in FILE_LEVEL for e in outcome.errors)
    return outcome.valid_count == 0 or file_level or (outcome.error_count > 0 and not skip_bad_rows)


def write_rows(
    trainset: Trainset,
    source: Any,
    *,
    valid_count: int,
    on_written: Callable[[int], None] | None = None,
) -> int:
    """Insert the valid rows of ``source`` (numbered 0..n-1) with their train/dev split and place.

    Call inside a transaction: a failure part-way leaves nothing behind.
    """
    _, dev_idx = split_indices(valid_count, dev_ratio=trainset.dev_ratio, seed=trainset.split_seed)
    dev = set(dev_idx)
    batch: list[TrainsetRow] = []
    index = 0
    with open_source(source) as fh:
        for placed in iter_placed_rows(fh, trainset.fmt, limits=trainset_limits()):
            if placed.row_number == 0:  # the whole file fails (e.g. past the row limit)
                raise ImportAborted([error_line(e) for e in placed.errors])
            if placed.errors or placed.row is None:
                continue
            split = TrainsetRow.Split.DEV if index in dev else TrainsetRow.Split.TRAIN
            batch.append(
                TrainsetRow(
                    trainset=trainset,
                    index=index,
                    data=placed.row,
                    split=split,
                    source_number=placed.place,
                )
            )
            index += 1
            if len(batch) >= BATCH_SIZE:
                TrainsetRow.objects.bulk_create(batch)
                batch.clear()
                if on_written is not None:
                    on_written(index)
    if batch:
        TrainsetRow.objects.bulk_create(batch)
    if index != valid_count:  # the file changed between the two passes
        raise RuntimeError(f"expected {valid_count} valid rows, read {index} on the second pass")
    if on_written is not None:
        on_written(index)
    return index


def _names(name: str, file_name: str) -> dict[str, str]:
    """The trainset's name and file name, cut to their columns (an upload's name can be any length)."""

    def cut(value: str, field: str) -> str:
        column = Trainset._meta.get_field(field)
        assert isinstance(column, CharField)
        return value[: column.max_length]

    return {"name": cut(name, "name"), "file_name": cut(file_name, "file_name")}


def upload_name(name: str, file_name: str) -> str:
    """A new trainset's name: the one given, else the file's name without its extension."""
    return name.strip() or Path(file_name).stem or file_name


def import_upload(
    *,
    project: Project,
    user: Any,
    upload: Any,
    name: str,
    fmt: str,
    skip_bad_rows: bool,
    dev_ratio: float,
    split_seed: int,
) -> ImportOutcome:
    """Import an uploaded file now, or queue it when it is large. Nothing is created on errors.

    ValueError (before anything is read) when the split seed does not fit its column."""
    Trainset.check_split(split_seed)
    # Unsaved until its rows are in (or its import row is queued): nothing is created on errors.
    trainset = Trainset(
        project=project,
        **_names(name, upload.name),
        fmt=fmt,
        dev_ratio=dev_ratio,
        split_seed=split_seed,
        status=Trainset.Status.IMPORTING,
        created_by=user,
    )
    lines = count_lines(upload)
    if lines - (1 if fmt == "csv" else 0) >= async_rows_threshold():
        return _queue_import(trainset, upload, skip_bad_rows=skip_bad_rows)
    report = validate(upload, fmt)
    outcome = outcome_from_report(report)
    if refused(outcome, skip_bad_rows):
        return outcome
    try:
        _write(trainset, upload, report=report, outcome=outcome)
    except ImportAborted as e:
        outcome.errors, outcome.error_count, outcome.valid_count = e.errors, len(e.errors), 0
        return outcome
    outcome.trainset = trainset
    return outcome


def _write(
    trainset: Trainset, upload: Any, *, report: TrainsetReport, outcome: ImportOutcome
) -> None:
    """Save the trainset with its valid rows, in one transaction."""
    with transaction.atomic():
        trainset.row_count = report.valid_count
        trainset.fields = field_stats(report)
        trainset.save()
        write_rows(trainset, upload, valid_count=report.valid_count)
        trainset.status = Trainset.Status.READY
        if report.error_count:
            trainset.error = skipped_summary(outcome)
        trainset.save(update_fields=["status", "error"])


def skipped_summary(outcome: ImportOutcome) -> str:
    lines = [f"{outcome.error_count} bad row(s) skipped:"]
    lines += [str(e) for e in outcome.errors]
    if outcome.more_errors:
        lines.append(f"… and {outcome.more_errors} more")
    return "\n".join(lines)


def uploads_dir() -> Path:
    path = Path(settings.BFT_ARTIFACTS_DIR) / "uploads"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- the background import: a TrainsetImport row ----------------------------------------------


def _queue_import(trainset: Trainset, upload: Any, *, skip_bad_rows: bool) -> ImportOutcome:
    """Copy the upload to the shared directory and import it on a worker after commit."""
    path = uploads_dir() / f"{uuid.uuid4().hex}.{trainset.fmt}"
    outcome = ImportOutcome(queued=True)
    try:
        with open_source(upload) as src, open(path, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
        with transaction.atomic():
            trainset.save()
            outcome.trainset = trainset
            work = TrainsetImport.objects.create(
                trainset=trainset,
                path=str(path),
                skip_bad_rows=skip_bad_rows,
                created_by=trainset.created_by,
            )
            queue.enqueue(work)
    except BaseException:
        path.unlink(missing_ok=True)  # no row points at it
        raise
    work.refresh_from_db(fields=["status", "error"])
    if work.status == Status.FAILED:  # the queue was down: it ended at once, file removed
        outcome.queue_error = work.error
    return outcome


def import_progress(trainset: Trainset) -> dict[str, Any] | None:
    """The background import's {phase, done, total, percent}, or None when unknown."""
    work = TrainsetImport.objects.filter(trainset=trainset).first()
    if work is None:
        return None
    progress = queue.current_job_progress(str(work.rq_job_id), work.WORK.queue)
    if not progress:
        return None
    total = progress.get("total") or 0
    progress["percent"] = min(100, round(100 * progress.get("done", 0) / total)) if total else None
    return progress
