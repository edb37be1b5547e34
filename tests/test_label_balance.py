"""Balanced training rows and the fine-tune preview's training plan:
the cap on one label's share, frozen into the trace set's rule; the preview's warnings."""

from __future__ import annotations

from jobs.engine.types import FinetuneConfig
from jobs.models import FinetuneJob, TraceSet
from jobs.services import trace_sets
from tests.review_fixtures import make_cot_trace
from tests.test_review import FAST_HASHER
from tests.test_review_sets import form_data
from tests.web import WebTestCase


def query(student_pk: int, **overrides: object) -> dict[str, str]:
    """The fine-tune form's fields as a preview request's query string."""
    return {k: str(v) for k, v in form_data(student_pk, **overrides).items()}


class CapArithmeticTestCase(WebTestCase):
    def test_only_the_biggest_labels_lose_rows(self) -> None:
        capped = trace_sets.capped_counts
        self.assertEqual(capped({"a": 10, "b": 5}, 0.5), {"a": 5, "b": 5})
        self.assertEqual(capped({"a": 14, "b": 1}, 0.8), {"a": 4, "b": 1})  # 80 %: not over
        self.assertEqual(capped({"a": 10, "b": 8, "c": 1}, 0.5), {"a": 9, "b": 8, "c": 1})
        self.assertEqual(capped({"a": 12, "b": 12, "c": 2}, 0.4), {"a": 4, "b": 4, "c": 2})
        self.assertEqual(capped({"a": 3, "b": 3}, 0.5), {"a": 3, "b": 3})  # nothing to drop
        self.assertEqual(capped({"a": 7}, 1.0), {"a": 7})
        with self.assertRaisesMessage(ValueError, "the traces hold 1 label ('a')"):
            capped({"a": 7}, 0.8)
        with self.assertRaisesMessage(ValueError, "No label can stay under 20%"):
            capped({"a": 4, "b": 4, "c": 4, "d": 4}, 0.2)
        with self.assertRaises(ValueError):
            capped({"a": 1}, 0.0)

    def test_the_dropped_rows_are_a_seeded_sample(self) -> None:
        labelled = [(key, "a" if key < 12 else "b") for key in range(16)]
        kept, balance = trace_sets.select_capped(labelled, 0.5, seed=0)
        again, _ = trace_sets.select_capped(list(reversed(labelled)), 0.5, seed=0)
        other, _ = trace_sets.select_capped(labelled, 0.5, seed=1)
        self.assertEqual(kept, again)  # the same rows and seed: the same sample
        self.assertNotEqual(kept, other)
        self.assertEqual(len(kept), 8)
        self.assertTrue({12, 13, 14, 15} <= kept)  # the small label keeps every row
        self.assertEqual((balance.counts, balance.dropped), ((("a", 4), ("b", 4)), (("a", 8),)))


@FAST_HASHER
class CappedTraceSetTestCase(WebTestCase):
    """12 passing traces: 10 say "positive", 2 "negative" (83 %: a collapsed set)."""

    def setUp(self) -> None:
        super().setUp()
        self.bootstrap_run = self.make_run()
        self.student = self.make_model("student", fine_tunable=True)
        for i in range(12):
            label = "negative" if i in (3, 7) else "positive"
            make_cot_trace(self.bootstrap_run, i, label=label)
        self.url = f"/p/p1/runs/{self.bootstrap_run.pk}/finetune/"

    def test_the_balance_names_the_label_and_its_share(self) -> None:
        balance = trace_sets.selection_balance(self.bootstrap_run, "passing")
        self.assertTrue(balance.collapsed)
        self.assertEqual(balance.describe(), "'positive' is 83% of the sentiment labels (10 of 12)")
        capped = trace_sets.selection_balance(self.bootstrap_run, "passing", max_share=0.5)
        self.assertFalse(capped.collapsed)
        self.assertEqual(
            (capped.counts, capped.dropped),
            ((("negative", 2), ("positive", 2)), (("positive", 8),)),
        )

    def test_a_reviewers_edit_moves_a_trace_to_its_new_label(self) -> None:
        trace = self.bootstrap_run.traces.get(example_index=0)
        trace.edited_outputs = {"sentiment": "negative"}
        trace.save()
        balance = trace_sets.selection_balance(self.bootstrap_run, "passing")
        self.assertEqual(dict(balance.counts), {"positive": 9, "negative": 3})
        self.assertFalse(balance.collapsed)  # 75 %

    def test_freezing_with_a_cap_drops_the_excess_and_records_it_in_the_rule(self) -> None:
        frozen = trace_sets.freeze_trace_set(
            run=self.bootstrap_run,
            user=self.alice,
            selection="passing",
            max_label_share=0.5,
            seed=3,
        )
        labels = [item.trace.outputs["sentiment"] for item in frozen.items.select_related("trace")]
        self.assertEqual(sorted(labels), ["negative", "negative", "positive", "positive"])
        self.assertEqual(frozen.trace_count, 4)
        self.assertEqual(
            frozen.rule,
            {
                "selection": "passing",
                "balance": {
                    "field": "sentiment",
                    "max_share": 0.5,
                    "seed": 3,
                    "before": 12,
                    "counts": {"negative": 2, "positive": 2},
                    "dropped": {"positive": 8},
                },
            },
        )
        again = trace_sets.freeze_trace_set(
            run=self.bootstrap_run,
            user=self.alice,
            selection="passing",
            max_label_share=0.5,
            seed=3,
        )
        self.assertEqual(
            list(frozen.items.values_list("trace_id", flat=True)),
            list(again.items.values_list("trace_id", flat=True)),
        )
        with self.assertRaisesMessage(ValueError, "No label can stay under 10%"):
            trace_sets.freeze_trace_set(
                run=self.bootstrap_run, user=self.alice, selection="passing", max_label_share=0.1
            )
        self.assertEqual(TraceSet.objects.count(), 2)

    def test_the_preview_warns_of_a_collapsed_set_and_shows_the_cap(self) -> None:
        self.login(self.bob)
        r = self.client.get(self.url)
        self.assertContains(r, 'id="finetune-collapsed"')
        self.assertContains(r, "&#x27;positive&#x27; is 83% of the sentiment labels (10 of 12)")
        self.assertContains(r, 'name="max_label_share"')
        r = self.client.get(
            f"{self.url}preview/",
            query(self.student.pk, selection="passing", max_label_share="0.5"),
            headers={"HX-Request": "true"},
        )
        self.assertNotContains(r, 'id="finetune-collapsed"')
        self.assertContains(r, "leaves out 8 “positive”")
        self.assertContains(r, "<strong>4</strong>traces", html=False)

    def test_the_preview_says_how_many_steps_run_and_warns_when_too_few(self) -> None:
        self.login(self.bob)
        preview = f"{self.url}preview/"
        r = self.client.get(
            preview, query(self.student.pk, selection="passing"), headers={"HX-Request": "true"}
        )
        # 12 rows, 4 per step: 3 steps per epoch, auto: 8 epochs for the 24 steps
        self.assertContains(r, "<strong>24</strong>optimizer steps", html=False)
        self.assertContains(r, "3 steps per epoch × 8 epochs (auto: at least 24 steps)")
        self.assertNotContains(r, "Too few steps")
        r = self.client.get(
            preview,
            query(self.student.pk, selection="passing", batch_size="8"),
            headers={"HX-Request": "true"},
        )
        # 2 steps per epoch: the auto epochs stop at 10, 20 steps, and the preview says so
        self.assertContains(r, "2 steps per epoch × 10 epochs (auto: at least 24 steps)")
        self.assertContains(r, "12 rows are too few even at 10 epochs")
        r = self.client.get(
            preview,
            query(self.student.pk, selection="passing", epochs="1"),
            headers={"HX-Request": "true"},
        )
        self.assertContains(r, "Too few steps: only 3 optimizer steps, under 24")
        self.assertContains(r, "set them to 8")

    def test_queueing_with_a_cap_trains_on_a_capped_set_and_records_the_plan(self) -> None:
        self.login(self.bob)
        r = self.client.post(
            self.url, form_data(self.student.pk, selection="passing", max_label_share="0.5")
        )
        job = FinetuneJob.objects.get()
        self.assertRedirects(r, f"/p/p1/jobs/{job.pk}/", fetch_redirect_response=False)
        assert job.trace_set is not None
        self.assertEqual(job.trace_set.trace_count, 4)
        self.assertEqual(job.trace_set.rule["balance"]["dropped"], {"positive": 8})
        plan = job.config[FinetuneConfig.PLAN_KEY]
        self.assertEqual((plan["rows"], plan["epochs"], plan["total_steps"]), (4, 10, 10))
        self.assertEqual(job.finetune_config(), FinetuneConfig(base_model="smollm2"))
        page = self.client.get(f"/p/p1/jobs/{job.pk}/")  # the plan in words, not as a dict
        self.assertContains(page, f'<p id="job-plan"><strong>Plan:</strong> {plan["summary"]}</p>')
        for warning in plan["warnings"]:
            self.assertContains(page, warning)
        self.assertNotContains(page, "&#x27;rows&#x27;")

    def test_a_cap_is_refused_on_a_frozen_set_or_when_it_cannot_hold(self) -> None:
        frozen = trace_sets.freeze_trace_set(
            run=self.bootstrap_run, user=self.alice, selection="passing"
        )
        self.login(self.bob)
        r = self.client.post(
            self.url, form_data(self.student.pk, trace_set=frozen.pk, max_label_share="0.5")
        )
        self.assertEqual(r.status_code, 400)
        self.assertIn(
            "A frozen set keeps its traces", r.context["form"].errors["max_label_share"][0]
        )
        r = self.client.post(
            self.url, form_data(self.student.pk, selection="passing", max_label_share="0.3")
        )
        self.assertIn("No label can stay under 30%", r.context["form"].errors["max_label_share"][0])
        self.assertFalse(FinetuneJob.objects.exists())
        self.assertEqual(TraceSet.objects.count(), 1)
