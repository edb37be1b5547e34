"""Files the pages and the JSON API send, as HTTP responses: a succeeded fine-tune's artifacts, a
trace set's exports and an evaluation's results, each streamed under a name the server builds.
jobs/views/ and jobs/api/ both answer with these; what the files hold is the services'."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from django.http import FileResponse, Http404, HttpResponse, HttpResponseBase, StreamingHttpResponse

from jobs.models import Evaluation, FinetuneJob, TraceSet
from jobs.services import artifacts, comparisons, trace_sets

# An evaluation's exports: every stored result, CSV (formula-safe) or JSON Lines.
EVALUATION_EXPORTS: dict[str, tuple[Callable[[Evaluation], Iterator[str]], str]] = {
    "csv": (comparisons.export_csv, "text/csv; charset=utf-8"),
    "jsonl": (comparisons.export_jsonl, "application/x-ndjson"),
}


def attachment(
    body: Iterable[bytes | str], *, content_type: str, filename: str
) -> StreamingHttpResponse:
    """``body`` streamed as a file the browser saves as ``filename`` (built by the server)."""
    response = StreamingHttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def job_artifact(job: FinetuneJob, kind: str) -> HttpResponseBase:
    """One of a succeeded job's downloads (artifacts.DOWNLOAD_KINDS): 404 for an unknown kind, an
    unfinished job or a missing file; 503 when the program JSON cannot be written."""
    if kind not in artifacts.DOWNLOAD_KINDS or job.status != FinetuneJob.Status.SUCCEEDED:
        raise Http404("No such download.")
    filename = artifacts.download_name(job, kind)
    if kind == "adapter":
        root = artifacts.adapter_dir(job)
        if root is None:
            raise Http404("The adapter is missing from the artifacts directory.")
        zipped = artifacts.stream_zip(root, prefix=artifacts.download_stem(job, kind))
        return attachment(zipped, content_type="application/zip", filename=filename)
    path: Path | None
    if kind in ("program", "served-program"):
        export = artifacts.program_json if kind == "program" else artifacts.served_program_json
        try:
            path = export(job)
        except artifacts.ExportError as exc:
            return HttpResponse(str(exc), status=503, content_type="text/plain; charset=utf-8")
    else:
        path = artifacts.file_for(job, kind)
        if path is None:
            raise Http404("The file is missing from the artifacts directory.")
    content_type = "application/x-ndjson" if kind == "train" else "application/json"
    return FileResponse(
        path.open("rb"), as_attachment=True, filename=filename, content_type=content_type
    )


def trace_set_export(
    trace_set: TraceSet, fmt: str, *, multitask: bool, exclude_demos: bool
) -> StreamingHttpResponse:
    """A trace set's export (``fmt`` one of trace_sets.EXPORT_FORMATS): JSONL, the training rows
    exactly as build_training_rows makes them; CSV, fields, score and decision."""
    if fmt == "jsonl":
        body = trace_sets.export_jsonl(trace_set, multitask=multitask, exclude_demos=exclude_demos)
    else:
        body = trace_sets.export_csv(trace_set)
    return attachment(
        body,
        content_type=trace_sets.EXPORT_FORMATS[fmt],
        filename=trace_sets.export_filename(trace_set, fmt),
    )


def evaluation_export(evaluation: Evaluation, fmt: str) -> StreamingHttpResponse:
    """Every stored result of ``evaluation`` (``fmt`` one of EVALUATION_EXPORTS)."""
    rows, content_type = EVALUATION_EXPORTS[fmt]
    return attachment(
        rows(evaluation),
        content_type=content_type,
        filename=f"bftweb-evaluation-{evaluation.pk}.{fmt}",
    )
