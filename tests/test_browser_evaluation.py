"""A team member reads an evaluation in a real (headless Debian) chromium against a live server.

The fine-tune, its output model and a finished evaluation (teacher, base student, fine-tuned
student, every result) are made directly in the database. They open the fine-tune, see the
verdict, open the comparison, filter to the rows where the student and the teacher disagree, and
open one. Each step is saved to var/screenshots/evaluation-NN-<step>.png for a person to look at.
"""

from __future__ import annotations

import re

import pytest

from tests.browser import Shots, needs_chromium

PASSWORD = "a-long-password-1"

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]


def make_finished_finetune():
    """p1 with victor (viewer); a succeeded fine-tune, its output model, and its evaluation."""
    from django.contrib.auth.models import User
    from django.utils.timezone import now

    from jobs.engine.types import MetricSpec
    from jobs.models import (
        BootstrapRun,
        FinetuneJob,
        LanguageModel,
        Membership,
        Program,
        ProgramVersion,
        Project,
        Trainset,
        TrainsetRow,
    )
    from tests.test_evaluation_pages import build_evaluation, gold_of

    project = Project.objects.create(name="Sentiment team", slug="p1")
    victor = User.objects.create_user("victor", "victor@example.org", PASSWORD)
    bob = User.objects.create_user("bob", "bob@example.org", PASSWORD)
    Membership.objects.create(project=project, user=victor, role="viewer")
    Membership.objects.create(project=project, user=bob, role="operator")
    rows = [
        {"text": f"review {i}: {'loved it' if i % 2 else 'not for me'}", "sentiment": gold_of(i)}
        for i in range(32)
    ]
    trainset = Trainset.objects.create(
        project=project,
        name="reviews",
        file_name="reviews.jsonl",
        row_count=len(rows),
        status="ready",
        created_by=bob,
        fields=[
            {"name": "text", "type": "str", "fill_rate": 1.0},
            {"name": "sentiment", "type": "str", "fill_rate": 1.0},
        ],
    )
    TrainsetRow.objects.bulk_create(
        TrainsetRow(trainset=trainset, index=i, data=row, split="dev" if i < 16 else "train")
        for i, row in enumerate(rows)
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
        project=project, name="teacher-7b", model_name="smollm2", created_by=bob
    )
    base = LanguageModel.objects.create(
        project=project, name="smollm2", model_name="smollm2", fine_tunable=True, created_by=bob
    )
    run = BootstrapRun.objects.create(
        project=project,
        trainset=trainset,
        program_version=version,
        teacher=teacher,
        created_by=bob,
        metric=MetricSpec("exact_match", "sentiment").to_dict(),
        total=16,
        done=16,
        status="succeeded",
    )
    job = FinetuneJob.objects.create(
        project=project,
        run=run,
        student=base,
        created_by=bob,
        status="succeeded",
        started=now(),
        finished=now(),
        output_model_id="bftweb:smollm2:ft-1",
    )
    student = LanguageModel.objects.create(
        project=project,
        name="smollm2-ft-1",
        model_name="bftweb:smollm2:ft-1",
        source_job=job,
        created_by=bob,
    )
    build_evaluation(
        project=project,
        user=bob,
        trainset=trainset,
        version=version,
        models={"teacher": teacher, "base": base, "student": student},
        run=run,
        job=job,
        rows=16,
    )
    return job


@pytest.mark.django_db(transaction=True)
def test_a_member_reads_the_verdict_and_the_disagreements(
    live_server, browser_page, rq_redis, bft_artifacts
) -> None:
    page = browser_page
    from playwright.sync_api import expect

    job = make_finished_finetune()
    student_pk = job.output_models.get().pk
    shot = Shots(page, "evaluation-", clear=True)

    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill("victor")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    # The finished fine-tune shows its output model's verdict (loaded into the job page).
    page.goto(f"{live_server.url}/p/p1/jobs/{job.pk}/")
    verdict = page.locator("#job-verdict-words")
    expect(verdict).to_have_text(
        "Student 8/16 vs teacher 12/16, -25 points, p = 0.29: not yet significant"
    )
    expect(page.locator("#job-verdict-collapsed")).to_contain_text("may have collapsed")
    shot("job")

    # The comparison: the verdict first, each candidate, the collapse warning.
    page.locator("#job-verdict").get_by_role("link", name="Open the comparison").click()
    expect(page.get_by_role("heading", name=re.compile(r"^Evaluation #\d+$"))).to_be_visible()
    expect(page.locator("#verdict-words")).to_contain_text("Student 8/16 vs teacher 12/16")
    expect(page.locator(".notice.collapsed")).to_contain_text("may have collapsed")
    expect(page.locator("#summaries tbody tr")).to_have_count(3)
    expect(page.locator("#row-count")).to_have_text("16")
    shot("comparison")

    # Filter to the rows where the student and the teacher disagree (htmx swaps the rows only).
    expect(page.locator("#id_pair")).to_have_value(re.compile(r"^\d+-\d+$"))
    page.locator("#id_kind").select_option("disagree")
    expect(page).to_have_url(re.compile(r"kind=disagree"))
    expect(page.locator("#row-count")).to_have_text("8")
    expect(page.locator("#row-table tbody tr")).to_have_count(8)
    expect(page.locator("#verdict")).to_be_visible()  # the rest of the page stayed
    page.locator("#evaluation-rows").scroll_into_view_if_needed()
    shot("disagreements")

    # Open one: every candidate's answer side by side, and the next disagreement.
    page.locator("#row-table tbody tr").first.get_by_role("link").first.click()
    expect(page.get_by_role("heading", name="Row 0")).to_be_visible()
    expect(page.locator(".answers > .card")).to_have_count(3)
    expect(page.get_by_text("1 of 8 in this filter")).to_be_visible()
    expect(page.locator("#row-next")).to_have_text("Row 4 →")
    shot("row")

    # The Models page gives the fine-tuned model's latest verdict in short.
    page.goto(f"{live_server.url}/p/p1/models/")
    expect(page.locator(f"#model-verdict-{student_pk}")).to_contain_text("student 8/16")
    shot("models")

    # The list, and (for an operator) the form prefilled from the fine-tune.
    page.goto(f"{live_server.url}/p/p1/evaluations/")
    expect(page.locator("#evaluation-table tbody tr")).to_have_count(1)
    shot("list")
    page.get_by_role("button", name="Log out").click()
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill("bob")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.goto(f"{live_server.url}/p/p1/evaluations/new/?job={job.pk}")
    expect(page.locator("#id_model_3")).to_have_value(str(student_pk))
    expect(page.locator("#id_role_1")).to_have_value("teacher")
    shot("form")
