"""What a finished fine-tune offers for download, and how the web process produces it.

Files come from the job's artifact directory (``job_output_dir``: derived from the
job's primary key, never from request input): the LoRA adapter (zipped on the fly, streamed),
the training data JSONL and the manifest the engine wrote, and the compiled DSPy program JSON.
The worker writes the program JSON when the job succeeds; the web process never imports DSPy,
so if it is missing it runs ``python -m jobs.engine.export`` in a subprocess, once.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from jobs.engine.model_store import BUNDLED_NAME, HUB_ID_RE
from jobs.engine.output_files import (
    ADAPTER_CONFIG,
    ADAPTER_DIR,
    MANIFEST_FILE,
    PROGRAM_FILE,
    TRAIN_FILE,
)
from jobs.engine.programs import parse_program_spec
from jobs.engine.types import ModelSpec
from jobs.models import FinetuneJob, LanguageModel

EXPORT_TIMEOUT_S = 120
CHUNK = 1 << 16


# Each download (the URL's <kind>) and the file name the browser saves it as: bftweb-job-<pk>-<kind>.
DOWNLOAD_SUFFIXES = {
    "adapter": ".zip",
    "program": ".json",
    "served-program": ".json",
    "train": ".jsonl",
    "manifest": ".json",
}
DOWNLOAD_KINDS = tuple(DOWNLOAD_SUFFIXES)


@dataclass(frozen=True)
class Download:
    kind: str  # the URL's <kind>
    label: str
    filename: str  # what the browser saves it as
    help: str


def download_stem(job: FinetuneJob, kind: str) -> str:
    """A download's name without its suffix (the adapter zip's folder, too)."""
    return f"bftweb-job-{job.pk}-{kind}"


def download_name(job: FinetuneJob, kind: str) -> str:
    return download_stem(job, kind) + DOWNLOAD_SUFFIXES[kind]


def downloads(job: FinetuneJob) -> list[Download]:
    described = {
        "adapter": ("LoRA adapter", "peft adapter + tokenizer (zip)"),
        "program": ("DSPy program", "compiled program JSON"),
        "served-program": (
            "DSPy program on the server",
            "its predictors call manage.py serve; loads in plain DSPy",
        ),
        "train": ("Training data", "the chat rows it trained on"),
        "manifest": ("Manifest", "config, data hash, losses, versions"),
    }
    return [
        Download(kind, label, download_name(job, kind), text)
        for kind, (label, text) in described.items()
    ]


def job_output_dir(job: FinetuneJob) -> Path:
    return Path(settings.BFT_ARTIFACTS_DIR) / "jobs" / str(job.pk)


def file_for(job: FinetuneJob, kind: str) -> Path | None:
    """The plain file behind a download kind, if the worker wrote it."""
    names = {"train": TRAIN_FILE, "manifest": MANIFEST_FILE}
    if kind not in names:
        return None
    path = job_output_dir(job) / names[kind]
    return path if path.is_file() else None


def adapter_dir(job: FinetuneJob) -> Path | None:
    path = job_output_dir(job) / ADAPTER_DIR
    return path if (path / ADAPTER_CONFIG).is_file() else None


# --- the adapter, zipped while it streams -------------------------------------------------------


class _Sink(io.RawIOBase):
    """A write-only, unseekable file: zipfile then writes data descriptors and never seeks back."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


def stream_zip(root: Path, *, prefix: str) -> Iterator[bytes]:
    """Zip every file under ``root`` (as ``prefix/relative/path``), yielding bytes as they are made:
    memory stays at one chunk however large the adapter is."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            name = f"{prefix}/{path.relative_to(root).as_posix()}"
            with path.open("rb") as src, archive.open(name, "w", force_zip64=True) as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
                    if data := sink.take():
                        yield data
            if data := sink.take():
                yield data
    yield sink.take()


# --- the compiled program -------------------------------------------------------------------


class ExportError(RuntimeError):
    """The program JSON could not be written (the message says why)."""


def output_model(job: FinetuneJob) -> LanguageModel | None:
    """The model row the worker registered for this job's output (None for older jobs)."""
    return LanguageModel.objects.filter(source_job=job).order_by("pk").first()


def program_json(job: FinetuneJob) -> Path:
    """The compiled program of a succeeded job: written by the worker on success, or here (in a
    subprocess, on first request) when that failed or the job predates it; then kept."""
    if job.status != FinetuneJob.Status.SUCCEEDED or not job.output_model_id:
        raise ExportError("Only a succeeded job has a compiled program.")
    path = job_output_dir(job) / PROGRAM_FILE
    if path.is_file():
        return path
    spec, model_spec, extra = _program_inputs(job)
    return _export_in_subprocess(spec, model_spec, extra, path)


def _export_in_subprocess(
    spec: dict[str, Any], model_spec: dict[str, Any], extra: dict[str, Any], path: Path
) -> Path:
    """``python -m jobs.engine.export``: DSPy writes the program file, in a process of its own."""
    with tempfile.TemporaryDirectory(prefix="bftweb-export-") as tmp:
        spec_file, model_file, extra_file = (
            Path(tmp) / n for n in ("spec.json", "model.json", "extra.json")
        )
        spec_file.write_text(json.dumps(spec))
        model_file.write_text(json.dumps(model_spec))
        extra_file.write_text(json.dumps(extra))
        cmd = [
            sys.executable,
            "-m",
            "jobs.engine.export",
            str(spec_file),
            str(model_file),
            str(path),
            str(extra_file),
            "--artifacts-dir",
            str(settings.BFT_ARTIFACTS_DIR),
            "--model-cache-dir",
            str(settings.BFT_MODEL_CACHE_DIR),
        ]
        try:
            done = subprocess.run(
                cmd, cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            raise ExportError(
                f"Writing the program took longer than {EXPORT_TIMEOUT_S} s."
            ) from None
    if done.returncode != 0 or not path.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ExportError(f"Writing the program failed: {last}")
    return path


def write_program(job: FinetuneJob) -> Path:
    """Write the compiled program now, in a process that may import DSPy (the worker, on success)."""
    from jobs.engine.export import export_program

    spec, model_spec, extra = _program_inputs(job)
    path = job_output_dir(job) / PROGRAM_FILE
    return export_program(
        parse_program_spec(spec), ModelSpec.from_dict(model_spec), path, extra=extra
    )


def _program_inputs(job: FinetuneJob) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The program spec, the fine-tuned model's spec and the provenance the program file carries."""
    student = output_model(job) or job.student
    model_spec = {
        "kind": "local",
        "name": job.output_model_id,
        "temperature": student.temperature,
        "max_tokens": student.max_tokens,
    }
    extra = {
        "model_id": job.output_model_id,
        "job": job.pk,
        "project": job.project.slug,
        "program": str(job.run.program_version),
        "trained_without_demos": job.exclude_demos,
    }
    return job.run.program_version.spec, model_spec, extra


# --- the program on the model server --------------------------------------------------------


def served_program_json(job: FinetuneJob) -> Path:
    """The compiled program with every predictor on the model server: ``openai/<model id>`` at
    ``BFT_SERVE_URL``. Plain DSPy loads it (``served_program_snippet``); no bftweb, no artifact
    directory, no key in the file (the caller adds a project API key). Written by DSPy in a
    subprocess on first request, and again when ``BFT_SERVE_URL`` changed."""
    if job.status != FinetuneJob.Status.SUCCEEDED or not job.output_model_id:
        raise ExportError("Only a succeeded job has a compiled program.")
    path = job_output_dir(job) / download_name(job, "served-program")
    api_base = settings.BFT_SERVE_URL
    if path.is_file():
        try:
            written_for = json.loads(path.read_text(encoding="utf-8"))["bftweb"]["api_base"]
        except (ValueError, KeyError, TypeError):
            written_for = None
        if written_for == api_base:
            return path
    spec, model_spec, extra = _program_inputs(job)
    served_spec = {
        "kind": "litellm",
        "name": f"openai/{job.output_model_id}",
        "api_base": api_base,
        "temperature": model_spec["temperature"],
        "max_tokens": model_spec["max_tokens"],
    }
    return _export_in_subprocess(spec, served_spec, {**extra, "api_base": api_base}, path)


def served_program_snippet(job: FinetuneJob) -> str:
    """Plain DSPy code that rebuilds the program's modules, loads the served program file and
    calls the model server (shown on the job page; nothing of bftweb is imported)."""
    spec = parse_program_spec(job.run.program_version.spec)
    inputs = spec.input_fields
    lines = [
        '# pip install "dspy==3.4.1"   (plain DSPy: no bftweb checkout needed)',
        "import os",
        "",
        "import dspy",
        "",
        "",
        "class Program(dspy.Module):",
        "    def __init__(self):",
        "        super().__init__()",
    ]
    for module in spec.modules:
        lines.append(f"        self.{module.name} = dspy.{module.type}({module.signature!r})")
    lines += ["", f"    def forward(self, {', '.join(inputs)}):"]
    source = {name: name for name in inputs}  # field -> the expression that holds its value
    for module in spec.modules:
        args = ", ".join(f"{f.name}={source[f.name]}" for f in module.inputs)
        lines.append(f"        {module.name}_out = self.{module.name}({args})")
        for field in module.outputs:
            source[field.name] = f"{module.name}_out.{field.name}"
    outputs = ", ".join(f"{name}={source[name]}" for name in spec.output_fields)
    lines += [f"        return dspy.Prediction({outputs})", "", ""]
    example = ", ".join(f"{name}='...'" for name in inputs)
    lines += [
        "program = Program()",
        "# Your own file, so trusted: allow_unsafe_lm_state keeps its api_base (the model server).",
        f'program.load("{download_name(job, "served-program")}", allow_unsafe_lm_state=True)',
        "for predictor in program.predictors():  # a project API key: never stored in the file",
        '    predictor.lm = predictor.lm.copy(api_key=os.environ["BFTWEB_API_KEY"])',
        "",
        "with dspy.context(adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):",
        f"    print(program({example}))",
    ]
    return "\n".join(lines) + "\n"


# The Hugging Face id of the bundled model (jobs.engine.model_store.BUNDLED_NAME is its GGUF).
BUNDLED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
VLLM_LORA_RANKS = (16, 32, 64, 128, 256, 320, 512)  # what vLLM's --max-lora-rank accepts (>= 16)


def vllm_command(job: FinetuneJob) -> str:
    """The command that serves this job's adapter with vLLM (GPUs at scale), under the same model
    id, so the served program file works against it too (change its api_base)."""
    base = job.student.model_name
    if base == BUNDLED_NAME:
        base = BUNDLED_HUB_ID
    elif not HUB_ID_RE.fullmatch(base):
        base = "/path/to/the/base/model"  # a local directory or file: never shown by the pages
    rank = int((job.config or {}).get("lora_r") or 16)
    max_rank = next((r for r in VLLM_LORA_RANKS if r >= rank), rank)
    return (
        f"# unzip {download_name(job, 'adapter')} first: its folder is the adapter\n"
        f"vllm serve {base} --enable-lora --max-lora-rank {max_rank} \\\n"
        f"    --lora-modules {job.output_model_id}=./{download_stem(job, 'adapter')}"
    )


# --- how to use it --------------------------------------------------------------------------


def python_snippet(job: FinetuneJob, *, example: dict[str, Any] | None = None) -> str:
    """A few lines that load the downloaded program and call it (shown on the job page)."""
    spec = job.run.program_version.spec
    inputs = parse_program_spec(spec).input_fields
    example = example or {}
    args = ", ".join(f"{name}={_short(example.get(name, '...'))!r}" for name in inputs)
    return (
        "# In a bftweb checkout (its virtualenv), with BFT_ARTIFACTS_DIR set to the shared\n"
        "# artifacts directory, where the fine-tuned model id is registered.\n"
        "import json\n"
        "\n"
        "import dspy\n"
        "from jobs.engine.program_module import build_program\n"
        "from jobs.engine.programs import parse_program_spec\n"
        "\n"
        f'path = "{download_name(job, "program")}"\n'
        'spec = parse_program_spec(json.load(open(path))["bftweb"]["spec"])\n'
        "program = build_program(spec)\n"
        f"program.load(path, allow_unsafe_lm_state=True)  # every predictor: {job.output_model_id}\n"
        "\n"
        "with dspy.context(adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):\n"
        f"    prediction = program({args})\n"
        "print(prediction)\n"
    )


def _short(value: Any, limit: int = 160) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + "…"
    return value
