"""A new user watches work happen, in headless Debian chromium against a live server and a REAL
worker (started exactly as `make run` starts it, on the same test database):

bootstrap the demo data with the bundled SmolLM2 and see the counters move without reloading;
fine-tune on the worker and see step, loss and the curve grow; see the model id appear; download
the adapter and the program JSON; then load that program in a plain Python process and ask the
fine-tuned model. Screenshots: var/screenshots/live-NN-<stage>.png.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from jobs.models import FinetuneJob, LanguageModel
from tests.base import DEMO_DIR
from tests.browser import SHOTS, chromium_context, needs_chromium
from tests.workers import start_worker, stop_process

ROOT = Path(__file__).resolve().parent.parent
WORK_TIMEOUT_MS = 600_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    needs_chromium,
]


@pytest.fixture
def live_page(live_server):
    with chromium_context(accept_downloads=True) as context:
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
        page = context.new_page()
        page.set_default_timeout(20_000)
        yield page


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"live-{name}.png"), full_page=True)


def watch(
    page, selectors: dict[str, str], until: str, *, timeout_s: float, on_new: Any = None
) -> list[dict[str, str]]:
    """Read some elements' text every 0.3 s until ``until`` (a selector) appears; the distinct
    states seen (``on_new(state)`` is called with each new one)."""
    seen: list[dict[str, str]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = {}
        for key, selector in selectors.items():
            loc = page.locator(selector)
            state[key] = (
                loc.first.get_attribute("data-points")
                if key == "points"
                else loc.first.inner_text()
            )
        if not seen or seen[-1] != state:
            seen.append(state)
            if on_new is not None:
                on_new(state)
        if page.locator(until).count():
            return seen
        page.wait_for_timeout(300)
    raise AssertionError(f"timed out waiting for {until}; seen: {seen[-5:]}")


@pytest.mark.django_db(transaction=True)
def test_a_new_user_watches_a_bootstrap_and_a_fine_tune_live(
    live_server, live_page, rq_redis, bft_artifacts, tmp_path
) -> None:
    from django.contrib.auth.models import User
    from playwright.sync_api import expect

    User.objects.create_user("newbie", "newbie@example.org", "a-long-password-1")
    page = live_page
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    worker = start_worker(bft_artifacts / "worker.log")
    try:
        _journey(page, live_server.url, expect, tmp_path, bft_artifacts)
    except Exception:
        shot(page, "99-failure")
        log = (bft_artifacts / "worker.log").read_text()[-4000:]
        print(f"worker log (tail):\n{log}")
        raise
    finally:
        stop_process(worker)
    assert not errors, errors


def _journey(page, url: str, expect, tmp_path: Path, artifacts: Path) -> None:
    # Sign in, start a project (the bundled SmolLM2 comes with it), upload the demo data and program.
    page.goto(f"{url}/accounts/login/")
    page.get_by_label("Username").fill("newbie")
    page.get_by_label("Password").fill("a-long-password-1")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_label("Name").fill("Live demo")
    page.get_by_role("button", name="Create project").click()
    expect(page.get_by_role("heading", name="Live demo")).to_be_visible()
    base = page.url.rstrip("/")
    page.goto(f"{base}/trainsets/upload/")
    page.get_by_label("File").set_input_files(str(DEMO_DIR / "sentiment.jsonl"))
    page.get_by_role("button", name="Upload and validate").click()
    expect(page.get_by_text("Imported 48 rows.")).to_be_visible()
    page.goto(f"{base}/programs/new/")
    page.get_by_label("…or upload a .json / .yaml file").set_input_files(
        str(DEMO_DIR / "sentiment_program.json")
    )
    page.get_by_role("button", name="Save program from spec").click()
    expect(page.get_by_text("saved as version 1")).to_be_visible()
    # Short answers keep this test in minutes on 2 CPU cores (the Models page has no edit form yet).
    LanguageModel.objects.filter(model_name="smollm2").update(max_tokens=160)

    # Bootstrap 4 examples, one at a time, and watch the counters move without a reload.
    page.goto(f"{base}/runs/new/")
    page.get_by_label("Example limit").fill("4")
    # A quick look at live counters: random demos, no demo search's extra teacher calls first.
    page.get_by_label("Demo choice").select_option("random")
    page.get_by_label("Retries for failing answers").fill("0")  # greedy only: the same traces
    page.get_by_label("Threads").fill("1")
    expect(page.locator("#run-estimate")).to_contain_text("≈ 4")
    page.get_by_role("button", name="Queue bootstrap run").click()
    expect(page.get_by_role("heading", name="Bootstrap run #")).to_be_visible()
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("#run-status")).to_have_text("Running", timeout=WORK_TIMEOUT_MS)
    shots_taken: set[str] = set()

    def shoot_once(name: str) -> None:
        if name not in shots_taken:
            shots_taken.add(name)
            shot(page, name)

    def on_run_state(state: dict[str, str]) -> None:
        if state["status"] == "Running" and state["done"] not in ("0/4", "4/4"):
            shoot_once("01-run-running")

    seen = watch(
        page,
        {"done": "#run-done", "status": "#run-status"},
        '#run-status:text-is("Succeeded")',
        timeout_s=WORK_TIMEOUT_MS / 1000,
        on_new=on_run_state,
    )
    print("run states seen:", seen)
    running = [s for s in seen if s["status"] == "Running"]
    assert len({s["done"] for s in running}) >= 2 or any(
        s["done"] not in ("0/4", "4/4") for s in running
    ), seen
    assert seen[-1]["done"] == "4/4", seen
    assert page.evaluate("window.__sameDocument") is True  # htmx swapped fragments: no reload
    expect(page.locator("#run-live")).not_to_have_attribute(
        "hx-trigger", "every 2s [document.visibilityState === 'visible']"
    )
    expect(page.locator("table.newest tbody tr")).to_have_count(4)
    shot(page, "02-run-done")

    # Fine-tune every trace, batch 1, epochs auto (the plan's 24 steps: enough for the student to
    # learn the answer format, which the program snippet below parses).
    page.get_by_role("link", name="Configure a fine-tune").click()
    page.get_by_label("Trace selection").select_option("all")
    page.get_by_label("Batch size", exact=True).fill("1")
    page.get_by_label("Checkpoint every steps", exact=True).fill("1")
    # the verdict's own browser test is tests/test_browser_evaluation.py
    page.get_by_label("Evaluate on the dev split when done").uncheck()
    page.get_by_role("button", name="Queue fine-tune").click()
    expect(page.get_by_role("heading", name="Fine-tune job #")).to_be_visible()
    job = FinetuneJob.objects.get()
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("#job-state")).to_have_text("Running", timeout=WORK_TIMEOUT_MS)
    shot(page, "03-job-started")

    def on_job_state(state: dict[str, str]) -> None:
        if state["state"] == "Running" and int(state["points"]) >= 2:
            shoot_once("04-job-training")

    seen = watch(
        page,
        {
            "step": "#job-step",
            "loss": "#job-loss",
            "points": "svg.loss-curve",
            "state": "#job-state",
        },
        '#job-state:text-is("Succeeded")',
        timeout_s=WORK_TIMEOUT_MS / 1000,
        on_new=on_job_state,
    )
    print("job states seen:", seen)
    running = [s for s in seen if s["state"] == "Running"]
    assert len({s["step"] for s in running}) >= 2, seen  # the step moved while we watched
    assert any(s["loss"] != "–" for s in running), seen  # a loss showed up before the end
    points = [int(s["points"]) for s in seen]
    assert points[-1] > points[0] and points[-1] >= 2, points  # the curve grew
    assert page.evaluate("window.__sameDocument") is True
    job.refresh_from_db()
    model_id = f"bftweb:smollm2:ft-{job.pk}"
    expect(page.locator("#model-id")).to_have_text(model_id)
    shot(page, "05-job-done")

    # Copy the model id; download the adapter and the program.
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == model_id
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with page.expect_download() as info:
        page.get_by_role("link", name="LoRA adapter").click()
    adapter_zip = downloads / info.value.suggested_filename
    info.value.save_as(adapter_zip)
    names = zipfile.ZipFile(io.BytesIO(adapter_zip.read_bytes())).namelist()
    assert any(n.endswith("/adapter_config.json") for n in names), names
    assert any(n.endswith(".safetensors") for n in names), names
    with page.expect_download(timeout=180_000) as info:
        page.get_by_role("link", name="DSPy program", exact=True).click()
    program_file = downloads / info.value.suggested_filename
    info.value.save_as(program_file)
    assert json.loads(program_file.read_text())["bftweb"]["model_id"] == model_id

    # The snippet on the page, run as it is in a plain Python process, answers with the new model.
    snippet = page.locator("#snippet").inner_text()
    assert program_file.name in snippet
    script = downloads / "load_and_call.py"
    script.write_text(
        snippet + "\nprint('RESULT ' + json.dumps({'model': program.classify.predict.lm.model,"
        " 'sentiment': prediction.sentiment}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BFT_ARTIFACTS_DIR": str(artifacts)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, script.name],
        cwd=downloads,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    print("the fine-tuned program said:", result)
    assert result["model"] == model_id
    assert isinstance(result["sentiment"], str)
    assert "django" not in done.stderr.lower()

    # The new model is on the Models page and can teach the next run.
    page.get_by_role("navigation").get_by_role("link", name="Models").click()
    expect(page.get_by_role("cell", name=model_id)).to_be_visible()
    shot(page, "06-models")
    page.goto(f"{base}/runs/new/")
    expect(page.get_by_label("Teacher").locator("option", has_text=model_id)).to_have_count(1)

    # The jobs page: both, with who started them, and the worker with its device.
    page.get_by_role("navigation").get_by_role("link", name="Jobs").click()
    expect(page.locator("#jobs-table")).to_contain_text(f"job #{job.pk}")
    expect(page.locator("#workers")).to_contain_text("CPU")
    shot(page, "07-jobs")
