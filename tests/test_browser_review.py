"""A reviewer's session in a real (headless Debian) chromium against a live server.

Traces are made directly in the database (no model). The reviewer filters to unreviewed traces,
approves two with the keyboard, edits one (the training messages re-render), rejects one, applies
a threshold, and an operator's fine-tune form then shows the resulting approved count. Every step
is saved to var/screenshots/review-NN-<step>.png for a person to look at.
"""

from __future__ import annotations

import re

import pytest

from jobs.models import Trace
from tests.browser import Shots, needs_chromium
from tests.review_fixtures import PLACEHOLDER, make_cot_trace, make_errored_trace

PASSWORD = "a-long-password-1"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    needs_chromium,
]


def sign_in(page, url: str, username: str) -> None:
    page.goto(f"{url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def make_cast_and_run():
    """p1 with rita (reviewer) and bob (operator); a run of 12 ChainOfThought traces + 1 errored."""
    from django.contrib.auth.models import User

    from jobs.engine.types import MetricSpec
    from jobs.models import (
        BootstrapRun,
        LanguageModel,
        Membership,
        Program,
        ProgramVersion,
        Project,
        Trainset,
    )

    project = Project.objects.create(name="Sentiment team", slug="p1")
    rita = User.objects.create_user("rita", "rita@example.org", PASSWORD)
    bob = User.objects.create_user("bob", "bob@example.org", PASSWORD)
    Membership.objects.create(project=project, user=rita, role="reviewer")
    Membership.objects.create(project=project, user=bob, role="operator")
    trainset = Trainset.objects.create(
        project=project,
        name="reviews",
        row_count=13,
        status="ready",
        created_by=bob,
        fields=[
            {"name": "text", "type": "str", "fill_rate": 1.0},
            {"name": "sentiment", "type": "str", "fill_rate": 1.0},
        ],
    )
    program = Program.objects.create(project=project, name="sentiment", created_by=bob)
    version = ProgramVersion.objects.create(
        program=program,
        version=1,
        created_by=bob,
        spec={
            "name": "sentiment",
            "modules": [
                {"name": "classify", "type": "ChainOfThought", "signature": "text -> sentiment"}
            ],
        },
    )
    teacher = LanguageModel.objects.create(
        project=project, name="teacher", model_name="smollm2", created_by=bob
    )
    LanguageModel.objects.create(
        project=project, name="student", model_name="smollm2", fine_tunable=True, created_by=bob
    )
    run = BootstrapRun.objects.create(
        project=project,
        trainset=trainset,
        program_version=version,
        teacher=teacher,
        created_by=bob,
        metric=MetricSpec("token_f1", "sentiment", 0.5).to_dict(),
        total=13,
        done=13,
        status="succeeded",
    )
    scores = [0.9, 0.7, 0.4, 1.0]  # i % 4: passed, passed, failed, passed
    texts = {
        5: "Great phone, battery lasts two days.",
        7: 'Terrible. <script>alert("x")</script> Would not buy.',
    }
    for i in range(12):
        label = "positive" if i % 3 else "negative"
        score = scores[i % 4]
        output = label if score >= 0.5 else ("negative" if label == "positive" else "positive")
        make_cot_trace(
            run,
            i,
            label=label,
            output=output,
            score=score,
            passed=score >= 0.5,
            text=texts.get(i),
            reasoning=PLACEHOLDER if i == 5 else None,
        )
    make_errored_trace(run, 12)
    return run


@pytest.mark.django_db(transaction=True)
def test_a_reviewer_filters_approves_edits_rejects_and_thresholds(
    live_server, browser_page, rq_redis, bft_artifacts
) -> None:
    page = browser_page
    from playwright.sync_api import Dialog, expect

    run = make_cast_and_run()
    traces = {t.example_index: t for t in Trace.objects.filter(run=run)}
    shot = Shots(page, "review-", clear=True)
    base = f"{live_server.url}/p/p1/runs/{run.pk}/review/"
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", on_dialog)

    sign_in(page, live_server.url, "rita")
    page.goto(base)
    expect(page.locator("#review-counts")).to_contain_text("Unreviewed 13")
    expect(page.locator("#threshold-card svg.histogram")).to_be_visible()  # lazy-loaded panel
    shot("queue")

    # Filter to unreviewed and open the first trace.
    page.locator("#review-counts").get_by_role("link", name=re.compile("^Unreviewed")).click()
    expect(page).to_have_url(re.compile(r"\?state=unreviewed$"))
    expect(page.locator("#match-count")).to_have_text("13")
    shot("unreviewed")
    page.locator("#trace-table tbody tr").first.get_by_role("link").first.click()
    expect(page.get_by_role("heading", name="Trace #0")).to_be_visible()
    shot("trace")

    # Two approvals with the keyboard; each advances to the next unreviewed trace.
    page.keyboard.press("a")
    page.wait_for_url(re.compile(rf"/review/{traces[1].pk}/\?state=unreviewed$"))
    expect(page.get_by_role("heading", name="Trace #1")).to_be_visible()
    page.keyboard.press("a")
    page.wait_for_url(re.compile(rf"/review/{traces[2].pk}/\?state=unreviewed$"))
    assert list(
        Trace.objects.filter(run=run, review_state="approved").values_list(
            "example_index", flat=True
        )
    ) == [0, 1]
    expect(page.locator("#history")).to_contain_text("No decision yet.")
    shot("after-two-keyboard-approvals")

    # Edit trace 2 (the teacher was wrong): fix the answer and the reasoning, save and approve.
    page.locator("#edit-reasoning").fill("The reviewer calls it great value: clearly positive.")
    page.locator("#edit-sentiment").fill("positive")
    page.get_by_role("button", name="Save edit").click()
    expect(page.get_by_text("Edit saved")).to_be_visible()
    messages = page.locator("#call-1 .messages-list")
    expect(messages).to_contain_text("The reviewer calls it great value: clearly positive.")
    expect(page.locator("#call-1")).to_contain_text("re-rendered after edit")
    expect(page.locator("#review-state")).to_have_text("approved")
    # the sticky review panel then sits at the top of the shot
    page.evaluate("window.scrollTo(0, 0)")
    shot("edited")

    # Next (j), then reject with a comment (focus the comment with c, type, blur, press r).
    page.keyboard.press("j")
    page.wait_for_url(re.compile(rf"/review/{traces[3].pk}/"))
    page.keyboard.press("c")
    page.keyboard.type("Label disagrees with the text.")
    page.locator("h1").click()  # leave the textarea so the keys act again
    page.keyboard.press("r")
    page.wait_for_url(re.compile(rf"/review/{traces[4].pk}/"))
    assert Trace.objects.get(pk=traces[3].pk).review_state == "rejected"
    assert traces[3].decisions.get().comment == "Label disagrees with the text."
    page.goto(f"{base}{traces[3].pk}/")
    expect(page.locator("#history")).to_contain_text("rita rejected")
    expect(page.locator("#history")).to_contain_text("Label disagrees with the text.")
    shot("rejected")

    # The placeholder-reasoning trace is flagged, and hostile text is shown as text.
    page.goto(f"{base}{traces[5].pk}/")
    expect(page.locator("#placeholder-warning")).to_be_visible()
    page.goto(f"{base}{traces[7].pk}/")
    expect(page.locator("#call-1")).to_contain_text('<script>alert("x")</script>')
    shot("placeholder-and-escaping")

    # Threshold: slide to 0.5, see what it keeps, approve the unreviewed passing ones.
    page.goto(base)
    slider = page.locator("#threshold")
    expect(slider).to_be_visible()
    slider.evaluate(
        "(el) => { el.value = '0.5'; el.dispatchEvent(new Event('input', {bubbles: true})); }"
    )
    expect(page.locator("#threshold-value")).to_have_text("≥ 0.50")
    kept = (
        Trace.objects.filter(run=run, error="", score__gte=0.5)
        .exclude(review_state="rejected")
        .count()
    )
    expect(page.locator("#kept-count")).to_have_text(str(kept))
    to_approve = Trace.objects.filter(
        run=run, review_state="unreviewed", passed=True, score__gte=0.5
    ).count()
    assert to_approve == 6  # 4, 5, 7, 8, 9, 11
    expect(page.locator("#approve-above")).to_have_text("Approve 6 passing ≥ 0.50")
    page.locator("#threshold-card").scroll_into_view_if_needed()
    shot("threshold")
    page.locator("#approve-above").click()
    expect(page.get_by_text("Approved 6 passing traces with score ≥ 0.5.")).to_be_visible()
    assert dialogs and "Approve 6" in dialogs[-1]
    approved = Trace.objects.filter(run=run, review_state="approved").count()
    assert approved == 2 + 1 + 6
    expect(page.locator("#review-counts")).to_contain_text(f"Approved {approved}")
    shot("after-threshold")

    # The operator's fine-tune form shows the approved selection's size.
    page.get_by_role("button", name="Log out").click()
    sign_in(page, live_server.url, "bob")
    page.goto(f"{live_server.url}/p/p1/runs/{run.pk}/finetune/")
    expect(page.locator("#id_selection")).to_contain_text(f"Approved — {approved} traces")
    expect(page.locator("#finetune-preview .stats strong").first).to_have_text(str(approved))
    shot("finetune-form")
