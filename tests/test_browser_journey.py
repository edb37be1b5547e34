"""A new user's first session, in a real (headless Debian) chromium against a live server.

Log in, start a project, upload the demo trainset, define a program (with live validation and
"add module"), configure a bootstrap run, and see it queued. Every page is saved to
var/screenshots/NN-<page>.png for a person to look at.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.models import BootstrapRun, Program, Trainset
from tests.base import DEMO_DIR
from tests.browser import SHOTS, Shots, clear_shots, needs_chromium

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    needs_chromium,
]


@pytest.fixture(scope="module")
def shots_dir() -> Path:
    clear_shots("journey-")
    return SHOTS


def sign_in(page, url: str, username: str, password: str) -> None:
    page.goto(f"{url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


@pytest.mark.django_db(transaction=True)
def test_a_new_user_goes_from_login_to_a_queued_run(
    live_server, browser_page, shots_dir, rq_redis, bft_artifacts
) -> None:
    from django.contrib.auth.models import User
    from playwright.sync_api import expect

    User.objects.create_user("newbie", "newbie@example.org", "a-long-password-1")
    page = browser_page
    shot = Shots(page, "journey-")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    # Sign in.
    page.goto(f"{live_server.url}/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    shot("login")
    page.get_by_label("Username").fill("newbie")
    page.get_by_label("Password").fill("a-long-password-1")
    page.get_by_role("button", name="Sign in").click()

    # Start a project (the new user owns it; the bundled SmolLM2 is registered).
    expect(page.get_by_role("heading", name="Your projects")).to_be_visible()
    shot("home")
    page.get_by_label("Name").fill("Sentiment demo")
    page.get_by_role("button", name="Create project").click()
    expect(page.get_by_role("heading", name="Sentiment demo")).to_be_visible()
    shot("project")
    page.get_by_role("navigation").get_by_role("link", name="Models").click()
    expect(page.get_by_role("cell", name="smollm2").first).to_be_visible()
    shot("models")

    # Upload the demo trainset.
    page.get_by_role("navigation").get_by_role("link", name="Trainsets").click()
    page.get_by_role("link", name="Upload a trainset").click()
    expect(page.get_by_text("Limit:")).to_contain_text("50.0")
    shot("trainset-upload")
    page.get_by_label("File").set_input_files(str(DEMO_DIR / "sentiment.jsonl"))
    page.get_by_role("button", name="Upload and validate").click()
    expect(page.get_by_text("Imported 48 rows.")).to_be_visible()
    expect(page.get_by_role("cell", name="sentiment", exact=True).first).to_be_visible()
    shot("trainset-detail")
    assert Trainset.objects.get().row_count == 48

    # Define a program in the form, with live validation and "add module".
    page.get_by_role("navigation").get_by_role("link", name="Programs").click()
    page.get_by_role("link", name="New program").click()
    page.locator("#id_name").fill("sentiment")
    page.locator("#id_modules-0-name").fill("classify")
    page.locator("#id_modules-0-type").select_option("ChainOfThought")
    page.locator("#id_modules-0-signature").fill("text sentiment")
    expect(page.locator("#spec-check-form")).to_contain_text("modules[0].signature")
    shot("program-error")
    page.locator("#id_modules-0-signature").fill("text -> sentiment")
    page.locator("#id_modules-0-instructions").fill(
        "Classify the sentiment of a short review as positive or negative."
    )
    page.locator("#id_modules-0-field_descriptions").fill(
        "text: a short customer review\nsentiment: positive or negative"
    )
    expect(page.locator("#spec-check-form")).to_contain_text("Valid: 1 module")
    page.get_by_role("button", name="+ Add module").click()
    expect(page.locator("#id_modules-1-signature")).to_be_visible()
    assert page.locator("#id_modules-TOTAL_FORMS").input_value() == "2"
    shot("program-form")
    page.get_by_role("button", name="Save program", exact=True).click()
    expect(page.get_by_text("saved as version 1")).to_be_visible()
    expect(
        page.locator("section", has_text="Fits these trainsets").get_by_text("yes")
    ).to_be_visible()
    shot("program-detail")
    version = Program.objects.get().latest_version
    assert version is not None
    assert version.spec["modules"][0]["type"] == "ChainOfThought"

    # Configure a bootstrap run and see it queued.
    page.get_by_role("navigation").get_by_role("link", name="Runs").click()
    page.get_by_role("link", name="New bootstrap run").click()
    # 38 train examples × 1 module, plus the demo search's 40 calls (the default demo choice)
    estimate = page.locator("#run-estimate")
    expect(estimate).to_contain_text("≈ 78")
    expect(estimate).to_contain_text("38 examples × 1 module")
    expect(estimate).to_contain_text("Up to 38 more if every answer failed")  # 1 retry each
    page.get_by_label("Example limit").fill("10")
    expect(estimate).to_contain_text("≈ 50")
    expect(estimate).to_contain_text("10 examples × 1 module")
    shot("run-form")
    page.get_by_role("button", name="Queue bootstrap run").click()
    expect(page.get_by_role("heading", name="Bootstrap run #")).to_be_visible()
    expect(page.locator("#run-status")).to_have_text("Queued")
    shot("run-detail")
    run = BootstrapRun.objects.get()
    assert (run.status, run.total) == ("queued", 10)
    assert rq_redis.exists(f"rq:job:{run.rq_job_id}")
    assert not errors, errors


@pytest.mark.django_db(transaction=True)
def test_the_other_pages_an_owner_uses(
    live_server, browser_page, shots_dir, rq_redis, bft_artifacts
) -> None:
    """Members, model registration, a failed upload, a program edit and the fine-tune form."""
    from django.contrib.auth.models import User
    from playwright.sync_api import expect

    from jobs.models import FinetuneJob, LanguageModel, Membership, Project
    from tests.base import SENTIMENT_SPEC
    from tests.test_run_forms import make_call_trace

    owner = User.objects.create_user("olivia", "o@example.org", "a-long-password-1")
    rev = User.objects.create_user("rev", "r@example.org", "a-long-password-2")
    # Owners add people they already work with (another project); admins add anyone.
    team = Project.objects.create(name="Team", slug="team")
    Membership.objects.create(project=team, user=owner, role="owner")
    Membership.objects.create(project=team, user=rev, role="viewer")
    project = Project.objects.create(name="Support bot", slug="support-bot")
    Membership.objects.create(project=project, user=owner, role="owner")
    student = LanguageModel.objects.create(
        project=project, name="smollm2", model_name="smollm2", fine_tunable=True, created_by=owner
    )
    trainset = Trainset.objects.create(
        project=project,
        name="reviews",
        file_name="reviews.jsonl",
        row_count=4,
        status="ready",
        created_by=owner,
        fields=[
            {"name": "text", "type": "string", "fill_rate": 1.0},
            {"name": "sentiment", "type": "string", "fill_rate": 1.0},
        ],
    )
    program = Program.objects.create(project=project, name="sentiment", created_by=owner)
    version = program.versions.create(version=1, spec=SENTIMENT_SPEC, created_by=owner)
    run = BootstrapRun.objects.create(
        project=project,
        trainset=trainset,
        program_version=version,
        teacher=student,
        created_by=owner,
        metric={"name": "exact_match", "field": "sentiment", "threshold": 1.0, "options": {}},
        config={"num_threads": 4, "num_demos": 4, "demo_seed": 0, "limit": None},
        status="succeeded",
        total=4,
        done=4,
        passed=3,
        failed=1,
    )
    for i in range(4):
        make_call_trace(run, i, review_state="approved" if i < 3 else "rejected", passed=i != 3)

    page = browser_page
    shot = Shots(page, "journey-b")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(page, live_server.url, "olivia", "a-long-password-1")
    base = f"{live_server.url}/p/support-bot"

    page.goto(f"{base}/members/")
    page.get_by_label("Username").fill("rev")
    page.get_by_label("Role", exact=True).select_option("reviewer")
    page.get_by_role("button", name="Add member").click()
    expect(page.get_by_text("rev added as reviewer.")).to_be_visible()
    shot("members")

    page.goto(f"{base}/models/new/")
    page.get_by_label("Name").fill("gpt")
    page.get_by_label("Kind").select_option("litellm")
    page.get_by_label("Model", exact=True).fill("openai/gpt-4o-mini")
    page.get_by_label("API key environment variable").fill("sk-live-123")
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_text("not the key itself")).to_be_visible()
    shot("model-form-error")
    page.get_by_label("API key environment variable").fill("BFT_KEY_OPENAI")
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_role("cell", name="openai/gpt-4o-mini")).to_be_visible()
    page.locator(f"#model-test-{student.pk}").get_by_role("button", name="Test").click()
    expect(page.locator(f"#model-test-{student.pk}")).to_contain_text("testing…")
    shot("models-testing")

    page.goto(f"{base}/trainsets/upload/")
    bad = bft_artifacts / "bad.jsonl"
    bad.write_text(
        '{"text": "fine", "sentiment": "positive"}\n{"text": "<b>oops</b>", sentiment: 1}\n[1, 2]\n'
    )
    page.get_by_label("File").set_input_files(str(bad))
    page.get_by_role("button", name="Upload and validate").click()
    expect(page.locator("#upload-errors")).to_contain_text("line 2")
    shot("upload-errors")

    page.goto(f"{base}/programs/{program.pk}/edit/")
    page.locator("#id_modules-0-type").select_option("ChainOfThought")
    expect(page.locator("#spec-check-form")).to_contain_text("Valid")
    page.get_by_role("button", name="Save new version", exact=True).click()
    expect(page.get_by_text("Saved version 2")).to_be_visible()
    shot("program-v2")

    page.goto(f"{base}/runs/{run.pk}/")
    shot("run-detail")
    page.get_by_role("link", name="Configure a fine-tune").click()
    expect(page.locator("#finetune-preview")).to_contain_text("training rows")
    page.get_by_label("Trace selection").select_option("all")
    expect(page.locator("#finetune-preview")).to_contain_text("3")
    shot("finetune-form")
    page.get_by_role("button", name="Queue fine-tune").click()
    expect(page.get_by_role("heading", name="Fine-tune job #")).to_be_visible()
    shot("job-detail")
    assert FinetuneJob.objects.get().selection == "all"
    assert not errors, errors
