"""The evaluation pages: list, comparison (live, verdict, filters, rows), exports, and the
verdicts on the fine-tune and Models pages. Results are made directly in the database. The forms
that start an evaluation: tests/test_evaluation_form.py."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils.timezone import now

from jobs.engine.types import MetricSpec
from jobs.models import (
    BootstrapRun,
    Evaluation,
    EvaluationCandidate,
    EvaluationResult,
    FinetuneJob,
    LanguageModel,
    ProgramVersion,
    Project,
    Trainset,
)
from jobs.services import comparisons
from tests.web import OPERATE, READ_ALL, WebTestCase, streamed

SCRIPT = "<script>alert(1)</script>"


def gold_of(index: int) -> str:
    return "positive" if index % 2 else "negative"


def teacher_answer(index: int) -> str | None:
    """Right except on rows 2, 9, 14, 21... (wrong) and 5 (did not parse)."""
    if index == 5:
        return None
    if index % 12 in (2, 9):
        return "positive" if gold_of(index) == "negative" else "negative"
    return gold_of(index)


def base_answer(index: int) -> str | None:
    """Right on every third row, unparsed on every fourth, else wrong."""
    if index % 4 == 3:
        return None
    return gold_of(index) if index % 3 == 0 else "neutral"


def student_answer(index: int) -> str | None:
    """Collapsed: always "positive" (right on odd rows)."""
    return "positive"


ANSWERS = {"teacher": teacher_answer, "base": base_answer, "student": student_answer}


def build_evaluation(
    *,
    project: Project,
    user: User,
    trainset: Trainset,
    version: ProgramVersion,
    models: dict[str, LanguageModel],
    run: BootstrapRun | None = None,
    job: FinetuneJob | None = None,
    rows: int = 8,
    status: str = "succeeded",
    answers: dict[str, Any] | None = None,
) -> Evaluation:
    """An evaluation of ``models`` (role -> model: teacher, base, student) with a stored result for
    each (candidate, row) on rows 0..rows-1, and the verdict the worker would write."""
    answers = answers or ANSWERS
    evaluation = Evaluation.objects.create(
        project=project,
        program_version=version,
        trainset=trainset,
        metric=MetricSpec("exact_match", "sentiment").to_dict(),
        run=run,
        finetune_job=job,
        rows=rows,
        total=rows * len(models),
        done=rows * len(models),
        status=status,
        started=now() - timedelta(seconds=30),
        finished=now() if status in Evaluation.TERMINAL else None,
        created_by=user,
    )
    for position, (role, model) in enumerate(models.items()):
        candidate = EvaluationCandidate.objects.create(
            evaluation=evaluation,
            position=position,
            role=role,
            language_model=model,
            prompting="run_demos" if role == "teacher" else "zero_shot",
            input_cost_per_token=2e-6 if role == "teacher" else None,
            output_cost_per_token=8e-6 if role == "teacher" else None,
        )
        results = []
        for index in range(rows):
            answer = answers[role](index)
            gold = gold_of(index)
            results.append(
                EvaluationResult(
                    candidate=candidate,
                    row_index=index,
                    inputs={"text": f"review {index}"},
                    labels={"sentiment": gold},
                    outputs={} if answer is None else {"sentiment": answer},
                    reasoning=f"{role} thinks about review {index}",
                    raw=f"[[ ## sentiment ## ]] maybe {index}" if answer is None else "",
                    parsed=answer is not None,
                    passed=answer == gold,
                    score=1.0 if answer == gold else 0.0,
                    latency_s=0.5 if role == "teacher" else 0.1,
                    tokens_in=300 if role == "teacher" else 60,
                    tokens_out=20,
                    lm_calls=1,
                )
            )
        EvaluationResult.objects.bulk_create(results)
    if status in Evaluation.TERMINAL:
        evaluation.verdict = comparisons.compare(evaluation).verdict()
        evaluation.save(update_fields=["verdict"])
    return evaluation


class EvaluationPagesBase(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        rows = [{"text": f"review {i}", "sentiment": gold_of(i)} for i in range(24)]
        self.trainset = self.make_trainset(rows, dev_every=2)  # odd rows are dev
        self.version = self.make_program()
        self.teacher = self.make_model("teacher", fine_tunable=False)
        self.base = self.make_model("base")
        self.bootstrap_run = self.make_run(
            trainset=self.trainset,
            program_version=self.version,
            teacher=self.teacher,
            status="succeeded",
        )
        self.job = FinetuneJob.objects.create(
            project=self.p1,
            run=self.bootstrap_run,
            student=self.base,
            created_by=self.bob,
            status="succeeded",
            finished=now(),
            output_model_id=f"bftweb:base:ft-{self.bootstrap_run.pk}",
        )
        self.student = self.make_model("base-ft-1", source_job=self.job)
        self.models = {"teacher": self.teacher, "base": self.base, "student": self.student}

    def make_evaluation(self, **kwargs: Any) -> Evaluation:
        kwargs.setdefault("models", self.models)
        kwargs.setdefault("run", self.bootstrap_run)
        kwargs.setdefault("job", self.job)
        return build_evaluation(
            project=self.p1, user=self.bob, trainset=self.trainset, version=self.version, **kwargs
        )

    def candidate(self, evaluation: Evaluation, role: str) -> EvaluationCandidate:
        return evaluation.candidates.get(role=role)


class EvaluationPermissionsTestCase(EvaluationPagesBase):
    def setUp(self) -> None:
        super().setUp()
        self.evaluation = self.make_evaluation()
        self.url = f"/p/p1/evaluations/{self.evaluation.pk}/"

    def test_every_reading_url_is_for_members_only(self) -> None:
        for url in (
            "/p/p1/evaluations/",
            self.url,
            f"{self.url}status/",
            f"{self.url}rows/3/",
            f"{self.url}export.csv",
            f"{self.url}export.jsonl",
            f"/p/p1/evaluations/job/{self.job.pk}/verdict/",
        ):
            self.assert_roles("get", url, READ_ALL)

    def test_the_form_is_for_operators(self) -> None:
        self.assert_roles("get", "/p/p1/evaluations/new/", OPERATE)
        # an empty POST is refused with the form's errors (400) for operators
        expected = OPERATE | {"owner": 400, "operator": 400}
        self.assert_roles("post", "/p/p1/evaluations/new/", expected)

    def test_cancel_and_retry_are_for_operators(self) -> None:
        expected = {"owner": 302, "operator": 302, "reviewer": 403, "viewer": 403, "outsider": 404}
        self.assert_roles("post", f"{self.url}cancel/", expected)
        self.assert_roles("post", f"{self.url}retry/", expected)

    def test_reading_urls_refuse_posts_and_unknown_things_404(self) -> None:
        self.login(self.alice)
        self.assertEqual(self.client.post(self.url).status_code, 405)
        self.assertEqual(self.client.get(f"{self.url}export.xlsx").status_code, 404)
        self.assertEqual(self.client.get(f"{self.url}rows/999/").status_code, 404)
        other = Project.objects.get(slug="p2")
        self.assertEqual(self.client.get(f"/p/{other.slug}/evaluations/").status_code, 404)
        # another project's evaluation under this project's slug
        self.login(self.charlie)
        self.assertEqual(
            self.client.get(f"/p/p2/evaluations/{self.evaluation.pk}/").status_code, 404
        )

    def test_anonymous_users_are_sent_to_sign_in(self) -> None:
        r = self.client.get(self.url)
        self.assertEqual(r.status_code, 302)
        self.assertIn("/accounts/login/", r["Location"])


class EvaluationCsrfTestCase(EvaluationPagesBase):
    def test_posts_need_the_csrf_token(self) -> None:
        evaluation = self.make_evaluation(status="running")
        client, token = self.csrf_client(self.bob)
        for url in (
            f"/p/p1/evaluations/{evaluation.pk}/cancel/",
            f"/p/p1/evaluations/{evaluation.pk}/retry/",
            "/p/p1/evaluations/new/",
        ):
            self.assertEqual(client.post(url).status_code, 403, url)
        evaluation.refresh_from_db()
        self.assertFalse(evaluation.cancel_requested)
        r = client.post(
            f"/p/p1/evaluations/{evaluation.pk}/cancel/", headers={"X-CSRFToken": token}
        )
        self.assertEqual(r.status_code, 302)
        evaluation.refresh_from_db()
        self.assertTrue(evaluation.cancel_requested)
        r = client.post("/p/p1/evaluations/new/", {"csrfmiddlewaretoken": token})
        self.assertEqual(r.status_code, 400)  # past CSRF, refused by the form


class ComparisonPageTestCase(EvaluationPagesBase):
    def setUp(self) -> None:
        super().setUp()
        self.evaluation = self.make_evaluation()
        self.url = f"/p/p1/evaluations/{self.evaluation.pk}/"

    def test_it_shows_each_candidate_and_the_verdict(self) -> None:
        self.login(self.victor)
        r = self.client.get(self.url)
        self.assertEqual(r.status_code, 200)
        content = r.content.decode()
        # The student (always "positive") passes rows 1, 3, 5, 7; the teacher all but 2 and 5.
        self.assertContains(r, 'id="verdict-words"')
        self.assertIn(
            "Student 4/8 vs teacher 6/8, -25 points, p = 0.62: not yet significant", content
        )
        self.assertIn("Base 2/8 vs teacher 6/8", content)
        self.assertContains(r, "Fine-tuned student may have collapsed:")
        self.assertIn("answers &#x27;positive&#x27; for 8 of 8 rows (100 %)", content)
        for role in ("teacher", "base", "student"):
            self.assertContains(r, f'id="summary-{self.candidate(self.evaluation, role).pk}"')
        self.assertContains(r, "75%")  # teacher pass rate
        self.assertContains(r, "500 ms")  # teacher latency
        self.assertContains(r, "100 ms")
        self.assertContains(r, "$0.7600")  # teacher: 1000 × (300 × 2e-6 + 20 × 8e-6)
        self.assertContains(r, "×5.0 faster than the teacher")
        self.assertContains(r, "reference")
        self.assertContains(r, 'id="confusion"')
        self.assertContains(r, "Export CSV")
        self.assertNotContains(r, 'hx-trigger="every 2s')  # finished: no polling
        # operators only see the retry button on a failed / cancelled one; this one succeeded
        self.assertNotContains(r, "/retry/")

    def test_it_lists_disagreements_first_and_links_each_row(self) -> None:
        self.login(self.victor)
        r = self.client.get(self.url)
        rows = [row.index for row in r.context["rows"]]
        disagree = [row.index for row in r.context["rows"] if row.disagree]
        self.assertEqual(rows[: len(disagree)], disagree)
        self.assertEqual(sorted(rows), list(range(8)))
        self.assertContains(r, '<strong id="row-count">8</strong>')
        student, teacher = (self.candidate(self.evaluation, k).pk for k in ("student", "teacher"))
        self.assertContains(
            r,
            f"/p/p1/evaluations/{self.evaluation.pk}/rows/0/?pair={student}-{teacher}&amp;kind=all",
        )
        self.assertContains(r, f'<option value="{student}-{teacher}" selected>')

    def test_it_filters_rows_by_pair_and_kind(self) -> None:
        self.login(self.victor)
        student, teacher, base = (
            self.candidate(self.evaluation, k).pk for k in ("student", "teacher", "base")
        )
        expected = {
            # student right on odd rows; teacher wrong on 2 and 9 (only 8 rows: 2), unparsed on 5
            "disagree": [0, 4, 5, 6],
            "a_wrong_b_right": [0, 4, 6],
            "a_right_b_wrong": [5],
            "both_wrong": [2],
        }
        for kind, rows in expected.items():
            r = self.client.get(self.url, {"pair": f"{student}-{teacher}", "kind": kind})
            self.assertEqual([row.index for row in r.context["rows"]], rows, kind)
            self.assertContains(r, f'<strong id="row-count">{len(rows)}</strong>')
        r = self.client.get(self.url, {"pair": f"{base}-{teacher}", "kind": "a_right_b_wrong"})
        self.assertEqual([row.index for row in r.context["rows"]], [])
        self.assertContains(r, "No rows match.")
        self.assertContains(r, "base student right, teacher wrong")

    def test_a_bad_filter_falls_back_to_the_default(self) -> None:
        self.login(self.victor)
        for params in ({"pair": "x-y", "kind": "nope"}, {"pair": "1-1"}, {"page": "abc"}):
            r = self.client.get(self.url, params)
            self.assertEqual(r.status_code, 200, params)
            self.assertEqual(r.context["filter"].kind, "all")

    def test_the_filter_answers_htmx_with_only_the_rows(self) -> None:
        self.login(self.victor)
        r = self.client.get(
            self.url,
            {"kind": "disagree"},
            headers={"HX-Request": "true", "HX-Target": "evaluation-rows"},
        )
        self.assertNotContains(r, "<html")
        self.assertContains(r, 'id="evaluation-rows"')
        self.assertNotContains(r, 'id="verdict"')
        self.assertContains(r, '<strong id="row-count">4</strong>')

    def test_it_paginates_fifty_rows_a_page(self) -> None:
        evaluation = self.make_evaluation(rows=60)
        self.login(self.victor)
        url = f"/p/p1/evaluations/{evaluation.pk}/"
        r = self.client.get(url)
        self.assertEqual(len(r.context["rows"]), 50)
        self.assertContains(r, "page 1 of 2")
        r = self.client.get(url, {"page": "2"})
        self.assertEqual(len(r.context["rows"]), 10)

    def test_the_query_count_does_not_grow_with_the_rows_shown(self) -> None:
        evaluation = self.make_evaluation(rows=60)
        url = f"/p/p1/evaluations/{evaluation.pk}/"
        student, teacher = (self.candidate(evaluation, k).pk for k in ("student", "teacher"))
        self.login(self.victor)
        counts = {}
        # both_wrong: rows 2, 14, 26, 38, 50; "all": a full page of 50
        for kind in ("both_wrong", "all"):
            with CaptureQueriesContext(connection) as queries:
                r = self.client.get(url, {"pair": f"{student}-{teacher}", "kind": kind})
            counts[len(r.context["rows"])] = len(queries)
        self.assertEqual(sorted(counts), [5, 50])
        self.assertEqual(counts[5], counts[50], counts)
        # session, user, membership, evaluation, candidates, candidate ids, every result (the
        # summaries), the page's rows, the counts per candidate, the project switcher
        self.assertEqual(counts[50], 10)

    def test_it_escapes_model_output_everywhere(self) -> None:
        EvaluationResult.objects.filter(candidate__evaluation=self.evaluation, row_index=0).update(
            inputs={"text": SCRIPT},
            outputs={"sentiment": SCRIPT},
            reasoning=SCRIPT,
            raw=SCRIPT,
            error="",
        )
        EvaluationResult.objects.filter(candidate__evaluation=self.evaluation, row_index=1).update(
            parsed=False, raw=SCRIPT, outputs={}
        )
        EvaluationResult.objects.filter(candidate__evaluation=self.evaluation, row_index=4).update(
            error=f"ValueError: {SCRIPT}"
        )
        self.login(self.victor)
        for url in (self.url, f"{self.url}rows/0/", f"{self.url}rows/1/", f"{self.url}rows/4/"):
            content = self.client.get(url).content.decode()
            self.assertNotIn(SCRIPT, content, url)
            self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;", content, url)

    def test_it_shows_a_candidate_that_could_not_run(self) -> None:
        self.candidate(self.evaluation, "base").results.all().delete()
        EvaluationCandidate.objects.filter(evaluation=self.evaluation, role="base").update(
            error="Model 'base' refused: <b>no key</b>"
        )
        self.login(self.victor)
        r = self.client.get(self.url)
        self.assertContains(
            r, "could not run: Model &#x27;base&#x27; refused: &lt;b&gt;no key&lt;/b&gt;"
        )


class RowPageTestCase(EvaluationPagesBase):
    def test_it_shows_every_answer_side_by_side(self) -> None:
        evaluation = self.make_evaluation()
        self.login(self.victor)
        r = self.client.get(f"/p/p1/evaluations/{evaluation.pk}/rows/5/")
        self.assertEqual(r.status_code, 200)
        self.assertContains(r, "<h1>Row 5</h1>", html=True)
        self.assertContains(r, "review 5")  # the input
        self.assertContains(r, "teacher thinks about review 5")  # reasoning
        self.assertContains(r, "Raw text (did not parse)")  # the teacher did not parse row 5
        self.assertContains(r, "[[ ## sentiment ## ]] maybe 5")
        for role in ("teacher", "base", "student"):
            self.assertContains(r, f'id="answer-{self.candidate(evaluation, role).pk}"')
        self.assertContains(r, "500 ms")

    def test_previous_and_next_follow_the_filter(self) -> None:
        evaluation = self.make_evaluation()
        student, teacher = (self.candidate(evaluation, k).pk for k in ("student", "teacher"))
        self.login(self.victor)
        qs = f"pair={student}-{teacher}&kind=disagree"  # rows 0, 4, 5, 6
        r = self.client.get(f"/p/p1/evaluations/{evaluation.pk}/rows/4/?{qs}")
        self.assertContains(r, "2 of 4 in this filter")
        self.assertContains(
            r, f'/rows/0/?pair={student}-{teacher}&amp;kind=disagree" id="row-previous"'
        )
        self.assertContains(
            r, f'/rows/5/?pair={student}-{teacher}&amp;kind=disagree" id="row-next"'
        )


class LiveEvaluationTestCase(EvaluationPagesBase):
    def test_it_polls_while_running_with_each_candidates_progress(self) -> None:
        evaluation = self.make_evaluation(status="running")
        EvaluationResult.objects.filter(
            candidate__evaluation=evaluation, candidate__role="student", row_index__gte=3
        ).delete()
        self.login(self.victor)
        r = self.client.get(
            f"/p/p1/evaluations/{evaluation.pk}/status/", headers={"HX-Request": "true"}
        )
        self.assertNotContains(r, "<html")
        self.assertContains(r, "hx-trigger=\"every 2s [document.visibilityState === 'visible']\"")
        self.assertContains(r, '<strong id="evaluation-done">19/24</strong>', html=True)
        self.assertContains(r, '<td class="num">3/8</td>', html=True)
        self.assertContains(r, "answers/s")
        self.assertContains(r, 'id="evaluation-eta"')
        # the full page shows the verdict so far
        r = self.client.get(f"/p/p1/evaluations/{evaluation.pk}/")
        self.assertContains(r, "so far")

    def test_a_poll_costs_the_same_however_many_answers(self) -> None:
        evaluation = self.make_evaluation(status="running", rows=40)
        url = f"/p/p1/evaluations/{evaluation.pk}/status/"
        self.login(self.victor)
        self.client.get(url)  # warm up
        # session, user, membership, the evaluation, its candidates, counts per candidate, the
        # answers of this attempt (the rate)
        with self.assertNumQueries(7):
            self.client.get(url, headers={"HX-Request": "true"})

    def test_the_poll_that_sees_it_end_loads_the_comparison(self) -> None:
        evaluation = self.make_evaluation(status="running")
        Evaluation.objects.filter(pk=evaluation.pk).update(status="succeeded", finished=now())
        self.login(self.victor)
        r = self.client.get(
            f"/p/p1/evaluations/{evaluation.pk}/status/", headers={"HX-Request": "true"}
        )
        self.assertNotContains(r, 'hx-trigger="every 2s')
        self.assertContains(r, 'hx-trigger="load"')
        self.assertContains(r, 'hx-select="#main"')

    def test_an_operator_cancels_then_retries(self) -> None:
        evaluation = self.make_evaluation(status="queued")
        url = f"/p/p1/evaluations/{evaluation.pk}/"
        self.login(self.victor)
        self.assertNotContains(self.client.get(url), "/cancel/")
        self.login(self.bob)
        self.assertContains(self.client.get(url), "/cancel/")
        r = self.client.post(f"{url}cancel/", headers={"HX-Request": "true"})
        self.assertContains(
            r, '<span class="badge cancelled" id="evaluation-state">Cancelled</span>', html=True
        )
        evaluation.refresh_from_db()
        self.assertEqual(evaluation.status, "cancelled")
        r = self.client.post(f"{url}retry/")
        self.assertRedirects(r, url)
        evaluation.refresh_from_db()
        self.assertEqual(evaluation.status, "queued")
        r = self.client.post(f"{url}retry/", follow=True)
        self.assertContains(r, "can be retried")


class EvaluationListTestCase(EvaluationPagesBase):
    def test_it_lists_status_rows_candidates_and_verdict(self) -> None:
        done = self.make_evaluation()
        running = self.make_evaluation(status="running")
        self.login(self.victor)
        with CaptureQueriesContext(connection) as queries:
            r = self.client.get("/p/p1/evaluations/")
        self.assertEqual(r.status_code, 200)
        self.assertContains(r, f"/p/p1/evaluations/{done.pk}/")
        self.assertContains(r, f"/p/p1/evaluations/{running.pk}/")
        self.assertContains(r, "student 4/8 vs teacher 6/8, -25 points")
        self.assertContains(r, "fine-tuned student: base-ft-1")  # a candidate
        self.assertContains(r, "<progress")
        self.assertContains(r, '8 <span class="small muted">dev of reviews</span>', html=True)
        self.assertNotContains(r, "New evaluation")  # viewer
        self.make_evaluation()
        with CaptureQueriesContext(connection) as more:
            self.client.get("/p/p1/evaluations/")
        self.assertEqual(len(more), len(queries))


class ExportTestCase(EvaluationPagesBase):
    def setUp(self) -> None:
        super().setUp()
        self.evaluation = self.make_evaluation()
        EvaluationResult.objects.filter(candidate__evaluation=self.evaluation, row_index=0).update(
            reasoning='=HYPERLINK("http://evil")', outputs={"sentiment": "@SUM(A1)"}
        )
        self.login(self.victor)

    def test_csv_is_every_result_and_formula_safe(self) -> None:
        r = self.client.get(f"/p/p1/evaluations/{self.evaluation.pk}/export.csv")
        self.assertEqual(r["Content-Type"], "text/csv; charset=utf-8")
        self.assertIn("attachment;", r["Content-Disposition"])
        rows = list(csv.DictReader(io.StringIO(streamed(r).decode())))
        self.assertEqual(len(rows), 24)
        first = next(row for row in rows if row["row_index"] == "0")
        self.assertEqual(first["reasoning"], '\'=HYPERLINK("http://evil")')
        self.assertEqual(
            json.loads(first["outputs"]), {"sentiment": "@SUM(A1)"}
        )  # JSON: starts with {
        for row in rows:
            for value in row.values():
                self.assertFalse(value[:1] in ("=", "+", "@") and value[1:2] != "", value)

    def test_jsonl_parses_line_by_line(self) -> None:
        r = self.client.get(f"/p/p1/evaluations/{self.evaluation.pk}/export.jsonl")
        lines = streamed(r).decode().splitlines()
        records = [json.loads(line) for line in lines]
        self.assertEqual(len(records), 24)
        self.assertEqual({r["role"] for r in records}, {"teacher", "base", "student"})
        self.assertEqual(records[0]["outputs"], {"sentiment": "@SUM(A1)"})


class VerdictElsewhereTestCase(EvaluationPagesBase):
    def test_the_job_page_loads_the_latest_verdict(self) -> None:
        self.login(self.victor)
        r = self.client.get(f"/p/p1/jobs/{self.job.pk}/")
        self.assertContains(r, f'hx-get="/p/p1/evaluations/job/{self.job.pk}/verdict/"')
        url = f"/p/p1/evaluations/job/{self.job.pk}/verdict/"
        r = self.client.get(url)
        self.assertContains(r, "Not evaluated yet")
        older = self.make_evaluation()
        r = self.client.get(url)
        self.assertContains(r, "Student 4/8 vs teacher 6/8, -25 points")
        self.assertContains(r, f"/p/p1/evaluations/{older.pk}/")
        self.assertNotContains(r, "hx-trigger")
        newer = self.make_evaluation(status="running")
        r = self.client.get(url)
        self.assertContains(r, "evaluation running")
        self.assertContains(r, f"/p/p1/evaluations/{newer.pk}/")
        self.assertContains(r, 'hx-trigger="every 5s')
        self.assertContains(r, "Student 4/8 vs teacher 6/8")  # the older verdict stays

    def test_the_job_page_says_when_one_is_queued(self) -> None:
        queued = self.make_evaluation(status="queued")
        self.login(self.bob)
        r = self.client.get(f"/p/p1/evaluations/job/{self.job.pk}/verdict/")
        self.assertContains(r, "evaluation queued")
        self.assertContains(r, f"/p/p1/evaluations/{queued.pk}/")
        self.assertContains(r, f"/p/p1/evaluations/new/?job={self.job.pk}")

    def test_the_models_page_shows_each_fine_tuned_models_latest_verdict(self) -> None:
        self.login(self.victor)
        r = self.client.get("/p/p1/models/")
        self.assertContains(r, f'id="model-verdict-{self.student.pk}"')
        self.assertContains(r, "not evaluated yet")
        evaluation = self.make_evaluation()
        with CaptureQueriesContext(connection) as queries:
            r = self.client.get("/p/p1/models/")
        self.assertContains(r, f"Evaluation #{evaluation.pk}")
        self.assertContains(r, "student <b>4/8</b>")
        self.assertContains(r, "collapsed")
        other_job = FinetuneJob.objects.create(
            project=self.p1,
            run=self.bootstrap_run,
            student=self.base,
            created_by=self.bob,
            status="succeeded",
        )
        other = self.make_model("base-ft-2", source_job=other_job)
        self.make_evaluation(models={**self.models, "student": other}, job=other_job)
        with CaptureQueriesContext(connection) as more:
            self.client.get("/p/p1/models/")
        self.assertEqual(len(more), len(queries))
