"""Trace sets: frozen, versioned selections a fine-tune trains on; later reviews never change
them; the fine-tune form offers them; JSONL and CSV exports stream exactly what trains."""

from __future__ import annotations

import csv
import dataclasses
import io
import json

from django.http import StreamingHttpResponse

from jobs.engine.training_data import build_training_rows, rerender_trace
from jobs.engine.types import FinetuneConfig
from jobs.models import BootstrapRun, FinetuneJob, Trace, TraceSet
from jobs.services import finetunes, review, trace_sets
from tests.review_fixtures import make_cot_trace, make_errored_trace
from tests.test_review import FAST_HASHER
from tests.web import WebTestCase, streamed


def form_data(student_pk: int, **overrides: object) -> dict[str, object]:
    defaults = FinetuneConfig(base_model="-")
    data: dict[str, object] = {
        "student": student_pk,
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


@FAST_HASHER
class TraceSetTestCase(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.bootstrap_run = self.make_run()
        self.student = self.make_model("student", fine_tunable=True)
        self.traces = [make_cot_trace(self.bootstrap_run, i) for i in range(6)]
        make_errored_trace(self.bootstrap_run, 6)
        for t in self.traces[:4]:
            review.decide(trace=t, user=self.rita, verdict="approve")
        review.decide(
            trace=self.traces[1],
            user=self.rita,
            verdict="edit",
            edited_outputs={"reasoning": "Edited once."},
        )

    def second_run(self) -> BootstrapRun:
        r = self.bootstrap_run
        return BootstrapRun.objects.create(
            project=self.p1,
            trainset=r.trainset,
            program_version=r.program_version,
            teacher=r.teacher,
            metric=r.metric,
            created_by=self.alice,
        )

    def rows_now(self, trace_set: TraceSet) -> list[dict]:
        return trace_sets.training_rows(trace_set)

    def test_freezing_makes_numbered_versions_with_each_traces_decision(self) -> None:
        first = trace_sets.freeze_trace_set(run=self.bootstrap_run, user=self.alice)
        self.assertEqual(
            (first.version, first.trace_count, first.rule), (1, 4, {"selection": "approved"})
        )
        self.assertTrue(first.name.startswith("approved as of "))
        item = first.items.get(example_index=1)
        self.assertEqual(
            (item.review_state, item.edited_outputs, item.reviewed_by),
            ("approved", {"reasoning": "Edited once."}, self.rita),
        )
        assert item.last_decision is not None
        self.assertEqual(item.last_decision.verdict, "edit")
        second = trace_sets.freeze_trace_set(
            run=self.bootstrap_run,
            user=self.bob,
            selection="passing",
            name="all passing",
            trace_filter=review.TraceFilter(q="number 5"),
        )
        self.assertEqual((second.version, second.trace_count, second.name), (2, 1, "all passing"))
        self.assertEqual(second.rule, {"selection": "passing", "filter": {"q": "number 5"}})
        with self.assertRaises(ValueError):
            trace_sets.freeze_trace_set(
                run=self.bootstrap_run,
                user=self.alice,
                selection="approved",
                trace_filter=review.TraceFilter(outcome="errored"),
            )

    def test_a_frozen_set_does_not_change_when_later_reviews_happen(self) -> None:
        trace_set = trace_sets.freeze_trace_set(run=self.bootstrap_run, user=self.alice)
        items_before = list(
            trace_set.items.values_list(
                "trace_id", "review_state", "edited_outputs", "last_decision"
            )
        )
        rows_before = self.rows_now(trace_set)
        # Later: a rejection, a new edit, an approval of another trace, a bulk rejection, a rule change.
        review.decide(trace=self.traces[0], user=self.bob, verdict="reject")
        review.decide(
            trace=self.traces[1],
            user=self.bob,
            verdict="edit",
            edited_outputs={"reasoning": "Edited twice."},
        )
        review.decide(trace=self.traces[5], user=self.bob, verdict="approve")
        review.bulk_decide(
            run=self.bootstrap_run,
            user=self.alice,
            traces=self.bootstrap_run.traces.all(),
            verdict="reject",
        )
        review.set_required_approvals(run=self.bootstrap_run, user=self.alice, required=3)
        trace_set.refresh_from_db()
        self.assertEqual(trace_set.trace_count, 4)
        self.assertEqual(
            list(
                trace_set.items.values_list(
                    "trace_id", "review_state", "edited_outputs", "last_decision"
                )
            ),
            items_before,
        )
        self.assertEqual(self.rows_now(trace_set), rows_before)
        self.assertIn("Edited once.", json.dumps(rows_before))
        self.assertNotIn("Edited twice.", json.dumps(rows_before))

    def test_a_fine_tune_records_its_frozen_set_and_trains_on_it_whatever_happens_later(
        self,
    ) -> None:
        self.login(self.bob)
        r = self.client.post(
            f"/p/p1/runs/{self.bootstrap_run.pk}/finetune/", form_data(self.student.pk)
        )
        job = FinetuneJob.objects.get()
        self.assertRedirects(r, f"/p/p1/jobs/{job.pk}/", fetch_redirect_response=False)
        trace_set = job.trace_set
        assert trace_set is not None
        self.assertEqual(
            (trace_set.trace_count, trace_set.created_by, trace_set.version), (4, self.bob, 1)
        )
        rows = finetunes.training_rows(job)
        # Exactly build_training_rows over the approved traces with their edits at job time.
        records = [
            t.as_record()
            for t in Trace.objects.filter(run=self.bootstrap_run, review_state="approved").order_by(
                "example_index"
            )
        ]
        records[1] = rerender_trace(records[1], {"reasoning": "Edited once."})
        self.assertEqual(rows, build_training_rows(records))
        review.bulk_decide(
            run=self.bootstrap_run,
            user=self.alice,
            traces=self.bootstrap_run.traces.all(),
            verdict="reject",
        )
        review.decide(
            trace=self.traces[1],
            user=self.alice,
            verdict="edit",
            edited_outputs={"reasoning": "Later."},
        )
        self.assertEqual(finetunes.training_rows(FinetuneJob.objects.get()), rows)

    def test_a_job_without_multitask_trains_each_predictors_rows_from_its_set(self) -> None:
        job = finetunes.create_finetune_job(
            run=self.bootstrap_run,
            student=self.student,
            config=FinetuneConfig(base_model="-"),
            multitask=False,
            user=self.bob,
        )
        rows = finetunes.training_rows(job)
        self.assertEqual(len(rows), 4)  # one predictor, four approved traces
        assert job.trace_set is not None
        self.assertEqual(rows, trace_sets.training_rows(job.trace_set, multitask=False))

    def test_the_fine_tune_form_offers_frozen_sets_and_trains_on_the_chosen_one(self) -> None:
        # 6 traces
        old = trace_sets.freeze_trace_set(
            run=self.bootstrap_run, user=self.alice, selection="passing"
        )
        self.login(self.alice)
        r = self.client.get(f"/p/p1/runs/{self.bootstrap_run.pk}/finetune/")
        self.assertContains(r, 'name="trace_set"')
        self.assertContains(r, f"{old.name} v1 (6 traces)")
        self.assertContains(r, "Approved — 4 traces")  # the live selection's size
        r = self.client.post(
            f"/p/p1/runs/{self.bootstrap_run.pk}/finetune/",
            form_data(self.student.pk, trace_set=old.pk),
        )
        job = FinetuneJob.objects.get()
        self.assertEqual((job.trace_set, job.selection), (old, "passing"))
        self.assertEqual(TraceSet.objects.count(), 1)  # nothing new frozen

    def test_the_form_refuses_an_empty_selection_and_another_runs_set(self) -> None:
        other_run = self.second_run()
        make_cot_trace(other_run, 0)
        other_set = trace_sets.freeze_trace_set(run=other_run, user=self.alice, selection="passing")
        Trace.objects.filter(run=self.bootstrap_run).update(review_state="unreviewed")
        self.login(self.alice)
        r = self.client.post(
            f"/p/p1/runs/{self.bootstrap_run.pk}/finetune/", form_data(self.student.pk)
        )
        self.assertEqual(r.status_code, 400)
        self.assertContains(r, "has no traces yet", status_code=400)
        r = self.client.post(
            f"/p/p1/runs/{self.bootstrap_run.pk}/finetune/",
            form_data(self.student.pk, trace_set=other_set.pk),
        )
        self.assertEqual(r.status_code, 400)
        self.assertFalse(FinetuneJob.objects.exists())
        with self.assertRaises(ValueError):
            finetunes.create_finetune_job(
                run=self.bootstrap_run,
                student=self.student,
                config=FinetuneConfig(base_model="-"),
                user=self.alice,
                trace_set=other_set,
            )

    def test_the_review_page_freezes_and_lists_sets(self) -> None:
        self.login(self.rita)
        r = self.client.post(
            f"/p/p1/runs/{self.bootstrap_run.pk}/review/sets/",
            {"selection": "approved", "name": "golden"},
        )
        self.assertRedirects(
            r, f"/p/p1/runs/{self.bootstrap_run.pk}/review/", fetch_redirect_response=False
        )
        r = self.client.get(f"/p/p1/runs/{self.bootstrap_run.pk}/review/")
        self.assertContains(r, "golden")
        self.assertContains(r, "Froze “golden” as version 1: 4 traces.")
        r = self.client.post(
            f"/p/p1/runs/{self.bootstrap_run.pk}/review/sets/",
            {"selection": "approved", "narrow": "1", "state": "rejected"},
        )
        self.assertContains(
            self.client.get(f"/p/p1/runs/{self.bootstrap_run.pk}/review/"), "Nothing to freeze"
        )

    # --- exports --------------------------------------------------------------------------

    def test_the_jsonl_export_streams_exactly_build_training_rows(self) -> None:
        trace_set = trace_sets.freeze_trace_set(run=self.bootstrap_run, user=self.alice)
        self.login(self.victor)  # reading is enough to export
        r = self.client.get(
            f"/p/p1/runs/{self.bootstrap_run.pk}/review/sets/{trace_set.pk}/export.jsonl"
        )
        self.assertIsInstance(r, StreamingHttpResponse)
        self.assertIn('attachment; filename="p1-run', r["Content-Disposition"])
        lines = streamed(r).decode().splitlines()
        records = trace_sets.trace_set_records(trace_set)
        self.assertEqual([json.loads(line) for line in lines], build_training_rows(records))
        self.assertEqual(len(lines), 4)
        r = self.client.get(
            f"/p/p1/runs/{self.bootstrap_run.pk}/review/sets/{trace_set.pk}/export.jsonl?exclude_demos=0&multitask=0"
        )
        self.assertEqual(len(streamed(r).decode().splitlines()), 4)

    def test_the_csv_export_has_fields_score_and_decision_and_defuses_formulas(self) -> None:
        Trace.objects.filter(pk=self.traces[2].pk).update(
            inputs={"text": '=HYPERLINK("http://x")'}, score=0.75
        )
        trace_set = trace_sets.freeze_trace_set(run=self.bootstrap_run, user=self.alice)
        self.login(self.alice)
        r = self.client.get(
            f"/p/p1/runs/{self.bootstrap_run.pk}/review/sets/{trace_set.pk}/export.csv"
        )
        self.assertEqual(r["Content-Type"], "text/csv; charset=utf-8")
        rows = list(csv.DictReader(io.StringIO(streamed(r).decode())))
        self.assertEqual([row["example_index"] for row in rows], ["0", "1", "2", "3"])
        self.assertEqual(rows[1]["decision"], "approved")
        self.assertEqual(rows[1]["edited"], "yes")
        self.assertEqual(rows[1]["output:sentiment"], "positive")
        self.assertEqual(rows[1]["label:sentiment"], "positive")
        self.assertEqual(rows[1]["reviewed_by"], "rita")
        self.assertEqual(rows[2]["score"], "0.75")
        self.assertEqual(rows[2]["input:text"], '\'=HYPERLINK("http://x")')

    def test_exports_of_another_runs_set_are_404(self) -> None:
        trace_set = trace_sets.freeze_trace_set(run=self.bootstrap_run, user=self.alice)
        other_run = self.second_run()
        self.login(self.alice)
        self.assertEqual(
            self.client.get(
                f"/p/p1/runs/{other_run.pk}/review/sets/{trace_set.pk}/export.csv"
            ).status_code,
            404,
        )
        self.login(self.charlie)
        self.assertEqual(
            self.client.get(
                f"/p/p1/runs/{self.bootstrap_run.pk}/review/sets/{trace_set.pk}/export.csv"
            ).status_code,
            404,
        )


class TraceSetExportTestCase(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.bootstrap_run = self.make_run()
        self.make_trace(self.bootstrap_run, 0)
        self.trace_set = trace_sets.freeze_trace_set(
            run=self.bootstrap_run, user=self.alice, selection="all"
        )
        self.base = f"/p/p1/runs/{self.bootstrap_run.pk}/review/sets/{self.trace_set.pk}/export"

    def test_only_csv_and_jsonl_are_served_under_a_server_built_name(self) -> None:
        self.login(self.victor)
        for fmt in ("csv", "jsonl"):
            r = self.client.get(f"{self.base}.{fmt}")
            self.assertEqual(r.status_code, 200)
            self.assertEqual(
                r["Content-Disposition"],
                f'attachment; filename="p1-run{self.bootstrap_run.pk}-set{self.trace_set.version}.{fmt}"',
            )
        for fmt in (
            "html",
            "svg",
            "exe",
            "csv.html",
            'csv"; x="y',
            "csv%0d%0aSet-Cookie:x=1",
            "CSV",
        ):
            with self.subTest(fmt=fmt):
                r = self.client.get(f"{self.base}.{fmt}")
                self.assertEqual(r.status_code, 404)
                self.assertNotIn("Content-Disposition", r)

    def test_query_parameters_do_not_change_the_name(self) -> None:
        self.login(self.victor)
        r = self.client.get(f"{self.base}.csv", {"filename": "evil.html", "fmt": "html"})
        self.assertEqual(r["Content-Type"], "text/csv; charset=utf-8")
        self.assertIn(f'filename="p1-run{self.bootstrap_run.pk}-set', r["Content-Disposition"])
        self.assertTrue(r["Content-Disposition"].endswith('.csv"'))

    def test_another_projects_owner_gets_404(self) -> None:
        self.client.force_login(self.charlie)
        self.assertEqual(self.client.get(f"{self.base}.csv").status_code, 404)
