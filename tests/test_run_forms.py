from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from rq import Queue

from jobs.engine.types import FinetuneConfig
from jobs.models import BootstrapRun, FinetuneJob, Trace
from jobs.services import trace_sets
from tests.base import SENTIMENT_SPEC
from tests.web import OPERATE, READ_ALL, WebTestCase

SIGNATURE = {
    "instructions": "Classify the review.",
    "inputs": [{"name": "text", "type": "str", "desc": "", "prefix": "Text:"}],
    "outputs": [{"name": "sentiment", "type": "str", "desc": "", "prefix": "Sentiment:"}],
}


def run_post(run_setup: Mapping[str, object], **overrides: object) -> dict[str, object]:
    data = {
        "metric": "exact_match",
        "metric_field": "sentiment",
        "threshold": "1.0",
        "num_threads": "2",
        "limit": "",
        "num_demos": "4",
        "demo_seed": "0",
        **run_setup,
    }
    data.update(overrides)
    return data


class RunCreateTestCase(WebTestCase):
    url = "/p/p1/runs/new/"

    def setUp(self) -> None:
        super().setUp()
        self.trainset = self.make_trainset(dev_every=4)  # 8 rows: 6 train, 2 dev
        self.version = self.make_program()
        self.teacher = self.make_model("teacher")
        self.setup: dict[str, Any] = {
            "trainset": self.trainset.pk,
            "program_version": self.version.pk,
            "teacher": self.teacher.pk,
        }

    def test_only_operators_configure_runs(self) -> None:
        self.assert_roles("get", self.url, OPERATE)
        self.assert_roles(
            "post",
            self.url,
            {"reviewer": 403, "viewer": 403, "outsider": 404},
            run_post(self.setup),
        )
        self.assertFalse(BootstrapRun.objects.exists())

    def test_the_form_shows_the_estimated_lm_calls_and_every_metric(self) -> None:
        self.login(self.bob)
        r = self.client.get(self.url)
        # 6 train examples × 1 module, plus the default demo search's calls: the same figure the
        # htmx refresh gives before anything changes
        self.assertContains(r, "6 examples × 1 module")
        self.assertContains(r, "≈ 16")
        self.assertContains(r, "Up to 6 more if every answer failed")
        fragment = self.client.get(
            "/p/p1/runs/estimate/",
            {name: r.context["form"][name].value() or "" for name in r.context["form"].fields},
            headers={"HX-Request": "true"},
        )
        self.assertContains(fragment, "≈ 16")
        for name in ("exact_match", "normalized_match", "contains", "token_f1", "numeric", "regex"):
            self.assertContains(r, f'value="{name}"')
        self.assertContains(r, 'value="sentiment"')  # metric field preselected from the program

    def test_the_estimate_fragment_follows_the_form(self) -> None:
        two = dict(
            SENTIMENT_SPEC,
            modules=[
                *SENTIMENT_SPEC["modules"],
                {"name": "why", "type": "Predict", "signature": "text, sentiment -> why"},
            ],
        )
        version = self.version.program.versions.create(version=2, spec=two, created_by=self.alice)
        self.login(self.victor)
        r = self.client.get(
            "/p/p1/runs/estimate/",
            {**self.setup, "program_version": version.pk, "limit": "5"},
            headers={"HX-Request": "true"},
        )
        self.assertContains(r, "≈ 10")
        self.assertContains(r, "5 examples × 2 modules")
        self.assertNotContains(r, "to reason the demos")
        r = self.client.get(
            "/p/p1/runs/estimate/",
            {
                **self.setup,
                "program_version": version.pk,
                "limit": "5",
                "num_demos": "3",
                "reason_demos": "on",
            },
        )
        self.assertContains(r, "≈ 16")
        self.assertContains(r, "plus 6 to reason the demos")
        self.assertNotContains(r, "<html")
        r = self.client.get("/p/p1/runs/estimate/", {**self.setup, "metric_field": "text"})
        self.assertContains(r, "not a program output")
        self.assertEqual(self.status_for(self.charlie, "get", "/p/p1/runs/estimate/"), 404)

    def test_it_creates_and_queues_a_run_and_redirects_to_it(self) -> None:
        self.login(self.bob)
        with self.captureOnCommitCallbacks(execute=True):
            r = self.client.post(
                self.url, run_post(self.setup, limit="3", metric="normalized_match")
            )
        run = BootstrapRun.objects.get()
        self.assertRedirects(r, f"/p/p1/runs/{run.pk}/", fetch_redirect_response=False)
        self.assertEqual((run.status, run.total, run.created_by), ("queued", 3, self.bob))
        self.assertEqual(run.metric["name"], "normalized_match")
        self.assertEqual(
            run.config,
            {
                "num_threads": 2,
                "num_demos": 4,
                "demo_seed": 0,
                "limit": 3,
                "temperature": 0.0,
                "reason_demos": False,
            },
        )
        self.assertEqual(Queue("default", connection=self.redis).job_ids, [str(run.rq_job_id)])
        page = self.client.get(r["Location"])
        self.assertContains(page, "Queued")
        self.assertContains(page, "0/3")

    def test_the_form_offers_measured_demos_first_and_the_run_records_the_choice(self) -> None:
        self.login(self.bob)
        page = self.client.get(self.url)
        self.assertContains(page, '<option value="stratified_search" selected>')
        self.client.post(self.url, run_post(self.setup, demo_strategy="stratified_search"))
        self.client.post(self.url, run_post(self.setup))  # a post without the field
        measured, plain = BootstrapRun.objects.order_by("pk")
        self.assertEqual(measured.bootstrap_config().demo_strategy, "stratified_search")
        self.assertEqual(plain.bootstrap_config().demo_strategy, "random")

    def test_a_run_may_set_the_teacher_temperature_and_reason_its_demos_first(self) -> None:
        self.login(self.bob)
        page = self.client.get(self.url)
        self.assertContains(page, 'name="temperature"')
        r = self.client.post(self.url, run_post(self.setup, temperature="3"))
        self.assertContains(r, "less than or equal to 2", status_code=400)
        self.client.post(self.url, run_post(self.setup))
        self.client.post(self.url, run_post(self.setup, temperature="0.7", reason_demos="on"))
        default, warm = BootstrapRun.objects.order_by("pk")
        self.assertEqual((default.teacher_temperature, warm.teacher_temperature), (0.0, 0.7))
        self.assertEqual(warm.bootstrap_config().temperature, 0.7)
        self.assertTrue(warm.bootstrap_config().reason_demos)
        self.assertFalse(default.bootstrap_config().reason_demos)
        self.assertContains(self.client.get(f"/p/p1/runs/{warm.pk}/"), "temperature 0.7")
        self.assertContains(
            self.client.get(f"/p/p1/runs/{warm.pk}/"), "reasoned by the teacher first"
        )
        self.assertContains(self.client.get(f"/p/p1/runs/{default.pk}/"), "temperature 0.0")

    def test_it_refuses_a_metric_field_that_is_not_an_output(self) -> None:
        self.login(self.bob)
        r = self.client.post(self.url, run_post(self.setup, metric_field="text"))
        self.assertContains(r, "is not an output of sentiment v1", status_code=400)
        self.assertFalse(BootstrapRun.objects.exists())

    def test_it_refuses_a_program_that_does_not_fit_the_trainset(self) -> None:
        qa = self.make_trainset([{"question": "q", "sentiment": "positive"}])
        self.login(self.bob)
        r = self.client.post(self.url, run_post(self.setup, trainset=qa.pk))
        self.assertContains(r, "does not fit trainset", status_code=400)
        self.assertContains(
            r, "program input &#x27;text&#x27; is not a trainset field", status_code=400
        )
        self.assertFalse(BootstrapRun.objects.exists())

    def test_it_refuses_a_regex_metric_without_a_pattern(self) -> None:
        self.login(self.bob)
        r = self.client.post(self.url, run_post(self.setup, metric="regex"))
        self.assertContains(r, "needs a pattern", status_code=400)

    def test_it_refuses_another_projects_objects(self) -> None:
        foreign = self.make_model("foreign", project=self.p2)
        self.login(self.bob)
        r = self.client.post(self.url, run_post(self.setup, teacher=foreign.pk))
        self.assertContains(r, "Select a valid choice", status_code=400)
        self.assertFalse(BootstrapRun.objects.exists())

    def test_run_creation_needs_csrf(self) -> None:
        client, token = self.csrf_client(self.bob)
        self.assertEqual(client.post(self.url, run_post(self.setup)).status_code, 403)
        with self.captureOnCommitCallbacks(execute=True):
            r = client.post(self.url, {**run_post(self.setup), "csrfmiddlewaretoken": token})
        self.assertEqual(r.status_code, 302)


class RunPagesTestCase(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.bootstrap_run = self.make_run()

    def test_run_pages_are_readable_by_members_only(self) -> None:
        self.assert_roles("get", f"/p/p1/runs/{self.bootstrap_run.pk}/", READ_ALL)
        self.assert_roles("get", "/p/p1/runs/", READ_ALL)
        self.assert_roles("get", "/p/p1/jobs/", READ_ALL)
        self.assertEqual(
            self.status_for(self.charlie, "get", f"/p/p2/runs/{self.bootstrap_run.pk}/"), 404
        )

    def test_the_run_page_shows_its_state_and_settings(self) -> None:
        self.login(self.victor)
        r = self.client.get(f"/p/p1/runs/{self.bootstrap_run.pk}/")
        self.assertContains(r, "Bootstrap run #")
        self.assertContains(r, "Queued")
        self.assertContains(r, "exact_match on <code>sentiment</code>", html=False)
        self.assertNotContains(r, "Configure a fine-tune")


def make_call_trace(run: BootstrapRun, index: int, **kwargs: object) -> Trace:
    label = "positive" if index % 2 else "negative"
    call = {
        "predictor": "classify",
        "signature": SIGNATURE,
        "inputs": {"text": f"review {index} <b>bold</b>"},
        "outputs": {"sentiment": label},
        "demos": [],
    }
    kwargs.setdefault("passed", True)
    kwargs.setdefault("parsed", True)
    return Trace.objects.create(
        run=run,
        example_index=index,
        inputs=call["inputs"],
        labels={"sentiment": label},
        outputs={"sentiment": label},
        calls=[call],
        score=1.0,
        **kwargs,
    )


class FinetuneFormTestCase(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.bootstrap_run = self.make_run()
        self.student = self.make_model("student", fine_tunable=True)
        self.litellm = self.make_model(
            "api", kind="litellm", model_name="openai/gpt-4o-mini", fine_tunable=False
        )
        for i in range(4):
            make_call_trace(
                self.bootstrap_run,
                i,
                review_state="approved" if i < 2 else "unreviewed",
                passed=i != 3,
            )
        self.url = f"/p/p1/runs/{self.bootstrap_run.pk}/finetune/"

    def post_data(self, **overrides: object) -> dict[str, object]:
        defaults = FinetuneConfig(base_model="-")
        data: dict[str, object] = {
            "student": self.student.pk,
            "selection": "approved",
            "multitask": "on",
            "exclude_demos": "on",
        }
        for f in dataclasses.fields(FinetuneConfig):
            if f.name == "base_model":
                continue
            value = getattr(defaults, f.name)
            if isinstance(value, bool):
                if value:
                    data[f.name] = "on"
            elif isinstance(value, tuple):
                data[f.name] = ", ".join(value)
            else:
                data[f.name] = "" if value is None else str(value)
        data.update(overrides)
        return data

    def test_only_operators_configure_fine_tunes(self) -> None:
        self.assert_roles("get", self.url, OPERATE)
        self.assert_roles(
            "post", self.url, {"reviewer": 403, "viewer": 403, "outsider": 404}, self.post_data()
        )
        self.assertFalse(FinetuneJob.objects.exists())

    def test_the_form_has_every_finetune_config_field_with_defaults_and_help(self) -> None:
        self.login(self.bob)
        r = self.client.get(self.url)
        for f in dataclasses.fields(FinetuneConfig):
            if f.name != "base_model":
                self.assertContains(r, f'name="{f.name}"')
        self.assertContains(r, 'name="learning_rate" value="0.0005"')
        self.assertContains(r, "LoRA rank")
        self.assertContains(r, 'name="multitask"')
        self.assertContains(r, 'name="exclude_demos"')

    def test_only_fine_tunable_local_models_are_offered(self) -> None:
        self.login(self.bob)
        r = self.client.get(self.url)
        self.assertContains(r, f'<option value="{self.student.pk}"')
        self.assertNotContains(r, f'<option value="{self.litellm.pk}"')

    def test_selections_show_their_counts_and_the_preview_estimates_tokens(self) -> None:
        self.login(self.bob)
        r = self.client.get(self.url)
        self.assertContains(r, "Approved — 2 traces")
        self.assertContains(r, "passing (passed and parsed) — 3 traces")
        self.assertContains(r, "all parsed — 4 traces")
        self.assertContains(r, "training rows")
        self.assertContains(r, "≈ ")
        self.assertContains(r, "review 0 &lt;b&gt;bold&lt;/b&gt;")  # preview rows are escaped
        r = self.client.get(
            f"{self.url}preview/",
            {"selection": "all", "multitask": "on"},
            headers={"HX-Request": "true"},
        )
        self.assertContains(r, "<strong>4</strong>traces", html=False)
        self.assertNotContains(r, "<html")

    def test_the_preview_shows_the_kept_outputs_and_warns_when_one_dominates(self) -> None:
        self.login(self.bob)
        r = self.client.get(f"{self.url}preview/", {"selection": "all", "multitask": "on"})
        self.assertContains(r, "negative × 2")
        self.assertNotContains(r, "may learn to always answer")
        for i in range(4, 14):
            Trace.objects.create(
                run=self.bootstrap_run,
                example_index=i,
                outputs={"sentiment": "positive"},
                calls=[],
                parsed=True,
                passed=True,
            )
        r = self.client.get(f"{self.url}preview/", {"selection": "passing", "multitask": "on"})
        self.assertContains(r, "may learn to always answer")

    def test_picking_a_frozen_trace_set_previews_that_set_not_todays_selection(self) -> None:
        # the 2 approved traces
        frozen = trace_sets.freeze_trace_set(run=self.bootstrap_run, user=self.alice)
        edited = self.bootstrap_run.traces.get(example_index=0)
        edited.edited_outputs = {"sentiment": "neutral"}  # an edit after the freeze
        edited.save()
        self.bootstrap_run.traces.update(review_state="approved")  # and 2 more approved since
        other_run = self.make_run(
            trainset=self.bootstrap_run.trainset,
            program_version=self.bootstrap_run.program_version,
            teacher=self.bootstrap_run.teacher,
        )
        make_call_trace(other_run, 0)
        other_run_set = trace_sets.freeze_trace_set(run=other_run, user=self.alice, selection="all")
        self.login(self.bob)
        query: dict[str, Any] = {"selection": "approved", "multitask": "on"}
        r = self.client.get(f"{self.url}preview/", {**query, "trace_set": frozen.pk})
        self.assertContains(r, f"from {frozen}")
        self.assertContains(r, "<strong>2</strong>traces", html=False)
        self.assertContains(r, "negative × 1")  # trace 0 as frozen, not as edited later
        self.assertNotContains(r, "neutral")
        r = self.client.get(f"{self.url}preview/", query)
        self.assertContains(r, "<strong>4</strong>traces", html=False)
        self.assertContains(r, "neutral × 1")
        # another run's set is not this run's: the live selection is previewed
        r = self.client.get(f"{self.url}preview/", {**query, "trace_set": other_run_set.pk})
        self.assertContains(r, "<strong>4</strong>traces", html=False)
        self.assertNotContains(r, "from ")

    def test_it_queues_a_fine_tune_with_the_chosen_settings(self) -> None:
        self.login(self.bob)
        with self.captureOnCommitCallbacks(execute=True):
            r = self.client.post(
                self.url,
                self.post_data(
                    selection="passing", lora_r="8", target_modules="q_proj, v_proj", bf16=""
                ),
            )
        job = FinetuneJob.objects.get()
        self.assertRedirects(r, f"/p/p1/jobs/{job.pk}/", fetch_redirect_response=False)
        config = job.finetune_config()
        self.assertEqual(
            (config.lora_r, config.target_modules, config.bf16, config.base_model),
            (8, ("q_proj", "v_proj"), False, "smollm2"),
        )
        self.assertEqual(
            (job.selection, job.multitask, job.exclude_demos, job.student),
            ("passing", True, True, self.student),
        )
        self.assertEqual(Queue("gpu", connection=self.redis).job_ids, [str(job.rq_job_id)])
        self.assertContains(self.client.get(r["Location"]), "Fine-tune job #")

    def test_it_refuses_a_student_that_is_not_fine_tunable(self) -> None:
        self.login(self.bob)
        r = self.client.post(self.url, self.post_data(student=self.litellm.pk))
        self.assertContains(r, "is not fine-tunable", status_code=400)
        self.assertFalse(FinetuneJob.objects.exists())

    def test_it_refuses_an_empty_selection(self) -> None:
        Trace.objects.update(review_state="rejected")
        self.login(self.bob)
        r = self.client.post(self.url, self.post_data(selection="approved"))
        self.assertContains(r, "has no traces", status_code=400)
        self.assertFalse(FinetuneJob.objects.exists())

    def test_it_refuses_bad_hyperparameters_with_the_field(self) -> None:
        self.login(self.bob)
        r = self.client.post(
            self.url, self.post_data(lora_dropout="1.5", target_modules="q_proj; drop table")
        )
        self.assertContains(r, "Dropout must be below 1", status_code=400)
        self.assertContains(r, "is not a module name", status_code=400)
        self.assertFalse(FinetuneJob.objects.exists())

    def test_fine_tune_posts_need_csrf(self) -> None:
        client, _ = self.csrf_client(self.bob)
        self.assertEqual(client.post(self.url, self.post_data()).status_code, 403)
