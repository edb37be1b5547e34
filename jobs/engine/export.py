"""The compiled DSPy program of a fine-tune: the spec's program with every predictor on the new model.

What ``dspy.BootstrapFinetune.compile`` returns, as a file: the program built from its spec, each
predictor's LM set to the fine-tuned model id, no demos (the student was trained without them, as
with ``exclude_demos=True``), saved with ``program.save(path)``. The file also carries, under the
``"bftweb"`` key (DSPy ignores keys that are not predictors), the spec it was built from, so it
loads back with::

    spec = parse_program_spec(json.load(open(path))["bftweb"]["spec"])
    program = build_program(spec)
    program.load(path, allow_unsafe_lm_state=True)   # the LM's engine is bftweb's LocalEngine

The web process never imports DSPy, so it runs this module as a command::

    python -m jobs.engine.export SPEC_JSON_FILE MODEL_SPEC_JSON_FILE OUT.json [EXTRA_JSON_FILE]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from jobs.engine.programs import ProgramSpec, parse_program_spec
from jobs.engine.types import ModelSpec

BFTWEB_KEY = "bftweb"


def export_program(
    spec: ProgramSpec, model: ModelSpec, path: Path, *, extra: dict[str, Any] | None = None
) -> Path:
    """Write the program JSON for ``spec`` on ``model`` to ``path`` (atomically); return ``path``."""
    from jobs.engine.local_lm import make_lm
    from jobs.engine.programs import build_program

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


def load_program(path: Path | str) -> Any:
    """A program file written by :func:`export_program`, loaded back (trusted files only)."""
    from jobs.engine.programs import build_program

    state = json.loads(Path(path).read_text(encoding="utf-8"))
    program = build_program(parse_program_spec(state[BFTWEB_KEY]["spec"]))
    program.load(str(path), allow_unsafe_lm_state=True)
    return program


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    spec = parse_program_spec(json.loads(Path(args[0]).read_text(encoding="utf-8")))
    model = ModelSpec.from_dict(json.loads(Path(args[1]).read_text(encoding="utf-8")))
    extra = json.loads(Path(args[3]).read_text(encoding="utf-8")) if len(args) == 4 else None
    export_program(spec, model, Path(args[2]), extra=extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
