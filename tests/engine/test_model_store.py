"""Where the engine keeps its files: configured explicitly, else from the environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings

from jobs.engine import export, model_store


@pytest.fixture
def unconfigured(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine as a plain script sees it: configure() never called (restored afterwards)."""
    monkeypatch.setattr(model_store, "_artifacts_dir", None)
    monkeypatch.setattr(model_store, "_model_cache_dir", None)


@pytest.mark.usefixtures("unconfigured")
def test_a_plain_script_reads_the_environment_then_the_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("BFT_ARTIFACTS_DIR", raising=False)
    monkeypatch.delenv("BFT_MODEL_CACHE_DIR", raising=False)
    assert model_store.artifacts_dir() == Path.cwd() / "var" / "artifacts"
    assert model_store.model_cache_dir() == Path.home() / ".cache" / "bftweb" / "models"
    monkeypatch.setenv("BFT_ARTIFACTS_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("BFT_MODEL_CACHE_DIR", str(tmp_path / "c"))
    assert model_store.artifacts_dir() == tmp_path / "a"
    assert model_store.registry_dir() == tmp_path / "a" / "models"
    assert model_store.model_cache_dir() == tmp_path / "c"


@pytest.mark.usefixtures("unconfigured")
def test_configured_directories_win_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BFT_ARTIFACTS_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("BFT_MODEL_CACHE_DIR", str(tmp_path / "env-cache"))
    model_store.configure(artifacts_dir=tmp_path / "a")
    assert model_store.artifacts_dir() == tmp_path / "a"
    assert model_store.model_cache_dir() == tmp_path / "env-cache"  # None: left as it was
    model_store.configure(model_cache_dir=str(tmp_path / "c"))
    assert model_store.artifacts_dir() == tmp_path / "a"
    assert model_store.model_cache_dir() == tmp_path / "c"


@pytest.mark.usefixtures("unconfigured")
def test_django_hands_its_settings_to_the_engine() -> None:
    apps.get_app_config("jobs").ready()
    assert model_store.artifacts_dir() == Path(settings.BFT_ARTIFACTS_DIR)
    assert model_store.model_cache_dir() == Path(settings.BFT_MODEL_CACHE_DIR)


@pytest.mark.usefixtures("unconfigured")
def test_the_export_command_takes_the_directories_as_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, demo_spec
) -> None:
    seen: dict[str, object] = {}

    def fake_export(spec, model, path, *, extra=None):
        seen.update(spec=spec, model=model.name, path=path, extra=extra)
        seen["dirs"] = (model_store.artifacts_dir(), model_store.model_cache_dir())
        return path

    monkeypatch.setattr(export, "export_program", fake_export)
    spec_file, model_file = tmp_path / "spec.json", tmp_path / "model.json"
    spec_file.write_text(json.dumps(demo_spec.to_dict()))
    model_file.write_text(json.dumps({"kind": "local", "name": "bftweb:smollm2:ft-1"}))
    out = tmp_path / "program.json"
    argv = [str(spec_file), str(model_file), str(out)]
    dirs = ["--artifacts-dir", str(tmp_path / "a"), "--model-cache-dir", str(tmp_path / "c")]
    assert export.main([*argv, *dirs]) == 0
    assert seen == {
        "spec": demo_spec,
        "model": "bftweb:smollm2:ft-1",
        "path": out,
        "extra": None,
        "dirs": (tmp_path / "a", tmp_path / "c"),
    }
    with pytest.raises(SystemExit) as exit_info:
        export.main(argv[:2])  # too few arguments: the usage, and exit status 2 as before
    assert exit_info.value.code == 2
