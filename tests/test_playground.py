"""The playground: a program on one input (typed, or a trainset row) with up to four models side
by side, answered on a worker; every try stored with who ran it."""

from __future__ import annotations

from typing import Any

import pytest

from jobs import tasks
from jobs.models import PlaygroundTry
from jobs.services import playground, queue
from tests.browser import SHOTS, chromium_context, needs_chromium
from tests.web import WebTestCase
from tests.workers import start_worker, stop_process


class PlaygroundPageTest(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.version = self.make_program()
        self.small = self.make_model("small", max_tokens=16)
        self.other = self.make_model("other", max_tokens=16)
        self.url = "/p/p1/playground/"

    def form(self, **changes: object) -> dict[str, Any]:
        data: dict[str, Any] = {
            "program_version": str(self.version.pk),
            "models": [str(self.small.pk), str(self.other.pk)],
            "input__text": "The battery died after a day.",
        }
        data.update(changes)
        return data

    def test_the_form_asks_for_the_programs_inputs(self) -> None:
        self.login(self.victor)
        page = self.client.get(self.url)
        self.assertContains(page, 'name="input__text"')
        self.assertNotContains(page, '<button type="submit">Run</button>', html=False)
        self.assert_roles("get", self.url, {"viewer": 200, "outsider": 404})
        self.assert_roles(
            "post", self.url, {"viewer": 403, "reviewer": 403, "outsider": 404}, self.form()
        )

    def test_a_try_is_queued_with_who_ran_it(self) -> None:
        self.login(self.bob)
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post(self.url, self.form())
        attempt = PlaygroundTry.objects.get()
        self.assertRedirects(
            response,
            f"{self.url}?try={attempt.pk}&program_version={self.version.pk}",
            fetch_redirect_response=False,
        )
        self.assertEqual(attempt.created_by, self.bob)
        self.assertEqual(attempt.inputs, {"text": "The battery died after a day."})
        self.assertEqual([c["name"] for c in attempt.chosen], ["other", "small"])
        self.assertEqual(queue.get_queue("default").job_ids, [str(attempt.rq_job_id)])

    def test_bad_input_names_the_field(self) -> None:
        self.login(self.bob)
        response = self.client.post(self.url, self.form(input__text=""))
        self.assertContains(response, "Type this input, or pick a trainset row.", status_code=400)
        five = [str(self.make_model(f"m{i}").pk) for i in range(5)]
        response = self.client.post(self.url, self.form(models=five))
        self.assertContains(response, "Pick at most 4 models.", status_code=400)
        trainset = self.make_trainset()
        response = self.client.post(self.url, self.form(trainset=str(trainset.pk), row_index="99"))
        self.assertContains(response, "has no row 99", status_code=400)
        self.assertFalse(PlaygroundTry.objects.exists())

    def test_a_row_brings_its_inputs_and_gold_label(self) -> None:
        trainset = self.make_trainset()
        row = trainset.rows.get(index=3)
        with self.captureOnCommitCallbacks(execute=False):
            attempt = playground.create_try(
                project=self.p1,
                program_version=self.version,
                models=[self.small],
                user=self.bob,
                row=row,
            )
        self.assertEqual(attempt.inputs, {"text": "review 3"})
        self.assertEqual(attempt.labels, {"sentiment": "positive"})

    @pytest.mark.slow
    def test_the_worker_answers_with_each_model_and_the_page_escapes_it(self) -> None:
        with self.captureOnCommitCallbacks(execute=False):
            attempt = playground.create_try(
                project=self.p1,
                program_version=self.version,
                models=[self.small, self.other],
                user=self.bob,
                inputs={"text": "<script>alert(1)</script> Great phone!"},
            )
        self.assertEqual(tasks.run_playground_try(attempt.pk), "succeeded")
        attempt.refresh_from_db()
        self.assertEqual([r["name"] for r in attempt.results], ["small", "other"])
        for result in attempt.results:
            self.assertGreater(result["tokens_in"], 0)
            self.assertIsNone(result["passed"])  # no gold label to compare with
        self.login(self.victor)
        page = self.client.get(f"/p/p1/playground/tries/{attempt.pk}/")
        self.assertContains(page, "&lt;script&gt;alert(1)&lt;/script&gt;")
        self.assertNotContains(page, "<script>alert(1)")
        self.assertEqual(
            self.status_for(self.charlie, "get", f"/p/p1/playground/tries/{attempt.pk}/"), 404
        )


@pytest.mark.browser
@pytest.mark.slow
@needs_chromium
@pytest.mark.django_db(transaction=True)
def test_two_models_answer_side_by_side_in_the_browser(
    live_server, rq_redis, bft_artifacts
) -> None:
    """Pick the program and two models, type an input, see both answers (a real worker)."""
    from django.contrib.auth.models import User
    from playwright.sync_api import expect

    from jobs.models import LanguageModel, Membership, Program, ProgramVersion, Project
    from tests.base import SENTIMENT_SPEC

    user = User.objects.create_user("player", "p@example.org", "a-long-password-1")
    project = Project.objects.create(name="play", slug="play")
    Membership.objects.create(project=project, user=user, role=Membership.Role.OPERATOR)
    program = Program.objects.create(project=project, name="sentiment", created_by=user)
    ProgramVersion.objects.create(program=program, version=1, spec=SENTIMENT_SPEC, created_by=user)
    for name in ("teacher", "student"):
        LanguageModel.objects.create(
            project=project, name=name, model_name="smollm2", max_tokens=24, created_by=user
        )
    worker = start_worker(bft_artifacts / "worker.log")
    try:
        with chromium_context() as context:
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.goto(f"{live_server.url}/accounts/login/")
            page.get_by_label("Username").fill("player")
            page.get_by_label("Password").fill("a-long-password-1")
            page.get_by_role("button", name="Sign in").click()
            page.goto(f"{live_server.url}/p/play/playground/")
            page.get_by_label("teacher").check()
            page.get_by_label("student").check()
            page.get_by_label("text").fill("I love this phone, the screen is great.")
            page.get_by_role("button", name="Run").click()
            answers = page.locator("#try-answers .answer")
            expect(answers).to_have_count(2)
            expect(page.locator("#try-result .badge.succeeded").first).to_be_visible(
                timeout=300_000
            )
            expect(answers.nth(0)).to_contain_text("tokens in")
            expect(answers.nth(1)).to_contain_text("tokens in")
            expect(page.locator("#recent-tries")).to_contain_text("player")
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / "playground.png"), full_page=True)
    finally:
        stop_process(worker)
