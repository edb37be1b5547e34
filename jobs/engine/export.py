"""The compiled DSPy program of a fine-tune: the spec's program with every predictor on the new model.

What ``dspy.BootstrapFinetune.compile`` returns, as a file: the program built from its spec, each
predictor's LM set to the fine-tuned model id, no demos (the student was trained without them, as
with ``exclude_demos=True``), saved with ``program.save(path)``. The file also carries, under the
``"bftweb"`` key (DSPy ignores keys that are not predictors), the spec it was built from, so it
loads back with::

    from jobs.engine.program_module import build_program
    from jobs.engine.programs import parse_program_spec

    spec = parse_program_spec(json.load(open(path))["bftweb"]["spec"])
    program = build_program(spec)
    program.load(path, allow_unsafe_lm_state=True)   # the LM's engine is bftweb's LocalEngine

The web process never imports DSPy, so it runs this module as a command::

    python -m jobs.engine.export SPEC_JSON_FILE MODEL_SPEC_JSON_FILE OUT.json [EXTRA_JSON_FILE]
        [--artifacts-dir DIR] [--model-cache-dir DIR]

The two directories are passed to :func:`jobs.engine.model_store.configure` (default: the
environment, as for any script).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from jobs.engine import model_store
from jobs.engine.programs import ProgramSpec, parse_program_spec
from jobs.engine.types import ModelSpec

BFTWEB_KEY = "bftweb"


def export_program(
    spec: ProgramSpec, model: ModelSpec, path: Path, *, extra: dict[str, Any] | None = None
) -> Path:
    """Write the program JSON for ``spec`` on ``model`` to ``path`` (atomically); return ``path``."""
    from jobs.engine.local_lm import make_lm
    from jobs.engine.program_module import build_program

    if path.suffix != ".json":
        raise ValueError(f"the program file must end with .json: {path}")
    program = build_program(spec)
    lm = make_lm(model)
    for _name, predictor in program.named_predictors():
        predictor.lm = lm
        predictor.demos = []
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp-{os.getpid()}.json")
    program.save(str(tmp))
    state = json.loads(tmp.read_text(encoding="utf-8"))
    state[BFTWEB_KEY] = {"spec": spec.to_dict(), "model": model.to_dict(), **(extra or {})}
    tmp.write_text(json.dumps(state, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.rename(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.engine.export",
        description="Write the compiled program of a fine-tuned model as a DSPy program file.",
    )
    parser.add_argument("spec_file", type=Path, help="the program spec (JSON)")
    parser.add_argument("model_file", type=Path, help="the fine-tuned model's ModelSpec (JSON)")
    parser.add_argument("out", type=Path, help="the program file to write (.json)")
    parser.add_argument("extra_file", type=Path, nargs="?", help="provenance to record (JSON)")
    parser.add_argument("--artifacts-dir", type=Path, help="where fine-tuned ids are registered")
    parser.add_argument("--model-cache-dir", type=Path, help="where GGUF files are converted to")
    args = parser.parse_args(argv)
    model_store.configure(artifacts_dir=args.artifacts_dir, model_cache_dir=args.model_cache_dir)
    spec = parse_program_spec(_read_json(args.spec_file))
    model = ModelSpec.from_dict(_read_json(args.model_file))
    extra = _read_json(args.extra_file) if args.extra_file is not None else None
    export_program(spec, model, args.out, extra=extra)
    return 0


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


if __name__ == "__main__":
    sys.exit(main())
