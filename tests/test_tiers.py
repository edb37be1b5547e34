"""The tiers are enforced (tests/tiers.py): a test that starts a process or reaches the bundled
model fails unless it is marked slow. Checked on a small suite run by a pytest of its own."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT

SUITE = """
import subprocess
import sys

import pytest

from jobs.engine import local_lm, model_store


def test_unmarked_starts_a_process():
    subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_unmarked_reaches_the_model():
    with pytest.raises(model_store.UnknownModelError):
        local_lm.get_loaded_model("no-such-model")


@pytest.mark.slow
def test_marked_does_both():
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    with pytest.raises(model_store.UnknownModelError):
        local_lm.get_loaded_model("no-such-model")


def test_unmarked_does_neither():
    assert model_store.BUNDLED_NAME == "smollm2"
"""


@pytest.mark.slow
def test_an_unmarked_test_that_starts_a_process_or_reaches_the_model_fails(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeini("[pytest]\nmarkers =\n    slow: loads the model or starts a process\n")
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess(
        "-p", "tests.tiers", "-p", "no:django", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*test_unmarked_starts_a_process is not marked slow, but during its call it started a"
            " process: *",
            "*test_unmarked_reaches_the_model is not marked slow, but during its call it used the"
            " loaded model (local_lm.get_loaded_model)*",
        ],
        consecutive=False,
    )
