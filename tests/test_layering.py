"""The layers hold: the web process never loads DSPy or torch, and the engine knows no Django.

Pages, forms, services, the admin and the RQ entry points import only the light engine modules
(specs, metrics, trainset parsing, types); DSPy, torch and transformers are imported inside the
worker-side functions that need them.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("dspy", "torch", "transformers", "peft", "litellm")

WEB_PROCESS = """
import json, os, pkgutil, importlib, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bftweb.settings")
import django
django.setup()
from django.urls import get_resolver
get_resolver().url_patterns  # every view module, the admin, django-rq's pages
import jobs, jobs.tasks, jobs.worker
for info in pkgutil.walk_packages(jobs.__path__, "jobs."):
    if not info.name.startswith(("jobs.engine", "jobs.migrations")):
        importlib.import_module(info.name)
from django.core.management import call_command
call_command("check", verbosity=0)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in %r)))
"""


@pytest.mark.slow
def test_the_web_process_never_imports_dspy_or_torch() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WEB_PROCESS % (HEAVY,)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == [], f"the web process loaded {loaded}"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)  # and each name, which may be a module: from jobs import forms
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_engine_imports_nothing_of_django_or_the_app() -> None:
    for path in sorted((ROOT / "jobs" / "engine").glob("*.py")):
        outside = {
            name
            for name in _imports(path)
            if name.split(".")[0] in ("django", "bftweb")
            or (name.startswith("jobs.") and not name.startswith("jobs.engine"))
        }
        assert not outside, f"{path.name} imports {sorted(outside)}"


# What each package must never import (at the top, inside a function, or for type checking):
# layers import downwards only. models < services < work (the worker wing) and forms <
# views, api, admin, tasks; the API shares what it needs with the pages below both (downloads).
REQUEST_TOP = ("jobs.forms", "jobs.views", "jobs.api", "jobs.tasks", "jobs.admin", "jobs.downloads")
UPWARD = {
    "models": ("jobs.services", "jobs.work", *REQUEST_TOP),
    "services": ("jobs.work", *REQUEST_TOP),
    "work": REQUEST_TOP,
    "forms": ("jobs.work", "jobs.views", "jobs.api", "jobs.tasks", "jobs.admin"),
    "api": ("jobs.views", "jobs.work", "jobs.tasks"),
    "views": ("jobs.api", "jobs.work", "jobs.tasks"),
}


def _banned(name: str, banned: tuple[str, ...]) -> bool:
    return any(name == b or name.startswith(b + ".") for b in banned)


def test_nothing_imports_upward() -> None:
    """Nothing imports upward: not services from forms, views, api or the worker wing, and not
    the API from the views."""
    for package, banned in UPWARD.items():
        paths = sorted((ROOT / "jobs" / package).glob("*.py"))
        assert paths, f"jobs/{package}/ is empty"
        for path in paths:
            bad = {name for name in _imports(path) if _banned(name, banned)}
            assert not bad, f"jobs/{package}/{path.name} imports {sorted(bad)}"


def test_the_layering_check_sees_every_kind_of_import(tmp_path: Path) -> None:
    """An upward import is caught at the top, inside a function and under TYPE_CHECKING, and a
    module of the package is as good as the package (`from jobs.forms import values`)."""
    source = tmp_path / "upward.py"
    for line in (
        "from jobs.forms.values import parse_int",
        "from jobs.forms import values",
        "from jobs import views",
        "import jobs.views.live",
        "def f():\n    from jobs.api import live",
        "if TYPE_CHECKING:\n    from jobs.work.base import Work",
    ):
        source.write_text(line + "\n")
        assert any(_banned(n, UPWARD["services"]) for n in _imports(source)), line
    source.write_text("from jobs.values import parse_int\nfrom jobs.services import queue\n")
    assert not any(_banned(n, UPWARD["services"]) for n in _imports(source))


def _engine_imports(path: Path) -> set[str]:
    """The engine modules ``path`` imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "jobs.engine":
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jobs.engine."):
            names.add(node.module.split(".")[2])  # type: ignore[union-attr]
        elif isinstance(node, ast.Import):
            names.update(
                a.name.split(".")[2] for a in node.names if a.name.startswith("jobs.engine.")
            )
    return names - {path.stem}


def test_the_engine_has_no_import_loop() -> None:
    """Not even through an import inside a function: each engine module only uses lower ones."""
    graph = {path.stem: _engine_imports(path) for path in (ROOT / "jobs" / "engine").glob("*.py")}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, "import loop: " + " -> ".join([*path, module])
        if module in done:
            return
        for imported in sorted(graph.get(module, ())):
            visit(imported, (*path, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())
