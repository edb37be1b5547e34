"""Review pages: the queue (filters, counts), a trace (fields, training messages, history, edits),
permissions, CSRF on every POST, and escaping of hostile LM output."""

from __future__ import annotations

from django.test import Client, override_settings

from jobs.engine.training_data import chat_adapter, signature_from_dict
from jobs.forms.review import parse_field_value
from jobs.models import BootstrapRun, Trace, TraceDecision
from jobs.services import review, trace_sets
from tests.review_fixtures import PLACEHOLDER, make_cot_trace, make_errored_trace
from tests.web import READ_ALL, WebTestCase

REVIEW = {"owner": 302, "operator": 302, "reviewer": 302, "viewer": 403, "outsider": 404}
FAST_HASHER = override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"])


@FAST_HASHER  # the cast's five users otherwise cost ≈ 3.5 s of PBKDF2 per test
class ReviewPagesTestCase(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.bootstrap_run = self.make_run()
        self.traces = [make_cot_trace(self.bootstrap_run, i) for i in range(6)]
        self.wrong = make_cot_trace(self.bootstrap_run, 6, label="positive", output="negative")
        self.errored = make_errored_trace(self.bootstrap_run, 7, raw="RAW <b>unparsed</b> answer")
        self.queue = f"/p/p1/runs/{self.bootstrap_run.pk}/review/"

    def trace_url(self, trace: Trace, suffix: str = "") -> str:
        return f"{self.queue}{trace.pk}/{suffix}"

    # --- queue ----------------------------------------------------------------------------

    def test_it_lists_traces_with_counts_per_state(self) -> None:
        self.login(self.rita)
        r = self.client.get(self.queue)
        self.assertContains(r, "Passed <b>6</b>", html=False)
        self.assertContains(r, "Failed <b>1</b>", html=False)
        self.assertContains(r, "Errored <b>1</b>", html=False)
        self.assertContains(r, "Unreviewed <b>8</b>", html=False)
        self.assertContains(r, 'id="trace-table"')
        self.assertContains(r, "review number 3")

    def test_it_filters_by_outcome_state_score_text_and_assignment(self) -> None:

        review.decide(trace=self.traces[1], user=self.rita, verdict="approve")
        review.decide(trace=self.traces[2], user=self.rita, verdict="reject")
        review.decide(
            trace=self.traces[3],
            user=self.rita,
            verdict="edit",
            edited_outputs={"sentiment": "neutral"},
        )
        Trace.objects.filter(pk=self.traces[4].pk).update(assigned_to=self.rita, score=0.5)
        self.login(self.rita)

        def indexes(**params: str) -> list[int]:
            r = self.client.get(self.queue, params)
            self.assertEqual(r.status_code, 200)
            return [t.example_index for t in r.context["page"].object_list]

        self.assertEqual(indexes(outcome="errored"), [7])
        self.assertEqual(indexes(outcome="failed"), [6])
        self.assertEqual(indexes(outcome="passed"), [0, 1, 2, 3, 4, 5])
        self.assertEqual(indexes(state="approved"), [1])
        self.assertEqual(indexes(state="rejected"), [2])
        self.assertEqual(indexes(state="edited"), [3])
        self.assertEqual(indexes(state="unreviewed", outcome="passed"), [0, 3, 4, 5])
        self.assertEqual(indexes(min="0.4", max="0.6"), [4])
        self.assertEqual(indexes(q="NUMBER 5"), [5])  # case-insensitive, in inputs
        self.assertEqual(indexes(q="neutral"), [3])  # in edited outputs
        self.assertEqual(indexes(mine="1"), [4])
        # bad values are ignored
        self.assertEqual(indexes(min="nonsense", state="bogus"), list(range(8)))

    def test_text_search_finds_quotes_and_non_ascii(self) -> None:
        make_cot_trace(self.bootstrap_run, 8, text='she said "très bien" \\ ok')
        self.login(self.rita)
        for term in ('"très bien"', "TRÈS", "\\ ok"):
            r = self.client.get(self.queue, {"q": term})
            got = [t.example_index for t in r.context["page"].object_list]
            if term == "TRÈS":  # SQLite stores non-ASCII escaped: only an exact-case match is found
                self.assertIn(got, ([8], []))
            else:
                self.assertEqual(got, [8], term)

    def test_it_paginates(self) -> None:
        for i in range(8, 60):
            make_cot_trace(self.bootstrap_run, i)
        self.login(self.rita)
        r = self.client.get(self.queue, {"page": 2})
        self.assertEqual(
            [t.example_index for t in r.context["page"].object_list], list(range(50, 60))
        )
        self.assertContains(r, "Page 2 of 2")

    def test_the_queue_runs_a_fixed_number_of_queries_whatever_the_page_holds(self) -> None:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        self.login(self.rita)

        def queries(**params: str) -> int:
            with CaptureQueriesContext(connection) as ctx:
                self.assertEqual(self.client.get(self.queue, params).status_code, 200)
            return len(ctx.captured_queries)

        few = queries()
        for i in range(8, 60):
            trace = make_cot_trace(self.bootstrap_run, i)
            if i % 3 == 0:
                review.decide(
                    trace=trace,
                    user=[self.alice, self.bob, self.rita][i % 9 // 3],
                    verdict="approve",
                )
        review.assign_evenly(run=self.bootstrap_run, user=self.alice)
        self.assertEqual(queries(), few)  # 50 rows with reviewers and assignees: no query per row
        self.assertEqual(queries(state="unreviewed", q="number", min="0.5", mine="1"), few)

    def test_the_queue_flags_placeholder_reasoning(self) -> None:
        make_cot_trace(self.bootstrap_run, 8, reasoning=PLACEHOLDER)
        self.login(self.rita)
        r = self.client.get(self.queue)
        rows = {t.example_index: t.has_placeholder for t in r.context["page"].object_list}
        self.assertTrue(rows[8])
        self.assertFalse(rows[0])

    def test_the_count_chips_refresh_as_a_fragment(self) -> None:
        self.login(self.rita)
        r = self.client.get(f"{self.queue}counts/", headers={"HX-Request": "true"})
        self.assertContains(r, 'id="review-counts"')
        self.assertContains(r, 'hx-trigger="tracesChanged from:body"')
        self.assertNotContains(r, "<html")

    # --- one trace -------------------------------------------------------------------------

    def test_the_trace_page_shows_inputs_gold_reasoning_and_the_exact_training_messages(
        self,
    ) -> None:
        trace = self.traces[3]
        self.login(self.victor)  # a viewer may read
        r = self.client.get(self.trace_url(trace))
        self.assertContains(r, "review number 3")
        self.assertContains(r, "gold")
        self.assertContains(r, "The review 3 sounds positive.")  # ChainOfThought reasoning
        for message in trace.calls[0]["messages"]:
            self.assertContains(r, message["content"][:40])
        self.assertEqual(r.context["view"]["calls"][0]["messages"], trace.calls[0]["messages"])
        self.assertNotContains(r, 'data-key="a"')  # the viewer gets no decision buttons

    def test_an_unparsed_call_shows_its_raw_text(self) -> None:
        self.login(self.rita)
        r = self.client.get(self.trace_url(self.errored))
        self.assertContains(r, "Raw LM text")
        self.assertContains(r, "RAW &lt;b&gt;unparsed&lt;/b&gt; answer")
        self.assertContains(r, "never becomes a training row")
        self.assertNotContains(r, 'id="edit-form"')  # nothing to edit on a trace that did not parse

    def test_placeholder_reasoning_is_flagged_on_the_trace(self) -> None:
        trace = make_cot_trace(self.bootstrap_run, 8, reasoning=PLACEHOLDER)
        self.login(self.rita)
        r = self.client.get(self.trace_url(trace))
        self.assertContains(r, 'id="placeholder-warning"')
        r = self.client.get(self.trace_url(self.traces[0]))
        self.assertNotContains(r, 'id="placeholder-warning"')

    def test_next_and_previous_follow_the_filtered_queue(self) -> None:

        review.decide(trace=self.traces[2], user=self.rita, verdict="approve")
        self.login(self.rita)
        r = self.client.get(self.trace_url(self.traces[1]), {"state": "unreviewed"})
        self.assertEqual(
            r.context["next_url"], f"{self.trace_url(self.traces[3])}?state=unreviewed"
        )
        self.assertEqual(
            r.context["prev_url"], f"{self.trace_url(self.traces[0])}?state=unreviewed"
        )
        self.assertContains(r, "js/review.js")

    def test_approve_via_htmx_returns_the_panel_and_the_next_url(self) -> None:
        self.login(self.rita)
        r = self.client.post(
            self.trace_url(self.traces[0], "decide/") + "?state=unreviewed",
            {"verdict": "approve", "comment": "looks right"},
            headers={"HX-Request": "true"},
        )
        self.assertContains(r, 'id="decision-panel"')
        self.assertContains(r, "looks right")
        self.assertNotContains(r, "<html")
        self.assertIn("traceDecided", r["HX-Trigger"])
        self.assertIn(f"{self.traces[1].pk}/?state=unreviewed", r["HX-Trigger"])
        trace = Trace.objects.get(pk=self.traces[0].pk)
        self.assertEqual((trace.review_state, trace.reviewed_by), ("approved", self.rita))

    def test_a_plain_post_advances_to_the_next_trace(self) -> None:
        self.login(self.rita)
        r = self.client.post(
            self.trace_url(self.traces[0], "decide/"), {"verdict": "reject", "advance": "1"}
        )
        self.assertRedirects(r, self.trace_url(self.traces[1]))
        self.assertEqual(Trace.objects.get(pk=self.traces[0].pk).review_state, "rejected")

    def test_a_queue_row_decision_swaps_the_row_and_refreshes_counts(self) -> None:
        self.login(self.bob)
        r = self.client.post(
            self.trace_url(self.traces[0], "decide/"),
            {"verdict": "approve", "view": "row"},
            headers={"HX-Request": "true"},
        )
        self.assertContains(r, f'id="trace-{self.traces[0].pk}"')
        self.assertContains(r, "review-approved")
        self.assertIn("tracesChanged", r["HX-Trigger"])

    def test_history_shows_who_decided_what_and_when(self) -> None:

        review.decide(trace=self.traces[0], user=self.rita, verdict="approve")
        review.decide(
            trace=self.traces[0], user=self.bob, verdict="comment", comment="double-check the label"
        )
        review.decide(trace=self.traces[0], user=self.alice, verdict="reject")
        self.login(self.victor)
        r = self.client.get(self.trace_url(self.traces[0]))
        history = [(d.user.username, d.verdict) for d in r.context["history"]]
        self.assertEqual(history, [("alice", "reject"), ("bob", "comment"), ("rita", "approve")])
        self.assertContains(r, "double-check the label")
        self.assertContains(r, "<strong>alice</strong> rejected", html=False)

    def test_a_comment_needs_text(self) -> None:
        self.login(self.rita)
        r = self.client.post(
            self.trace_url(self.traces[0], "decide/"),
            {"verdict": "comment", "comment": "  "},
            headers={"HX-Request": "true"},
        )
        self.assertEqual(r.status_code, 400)
        self.assertFalse(TraceDecision.objects.exists())

    # --- editing --------------------------------------------------------------------------

    def test_editing_re_renders_the_training_messages_identically_to_the_engine_formatter(
        self,
    ) -> None:
        trace = self.traces[3]
        self.login(self.rita)
        r = self.client.post(
            self.trace_url(trace, "edit/"),
            {
                "field:reasoning": "The reviewer says: glowing words.",
                "field:sentiment": "positive",
                "approve": "1",
            },
        )
        self.assertRedirects(r, self.trace_url(trace) + "#training", fetch_redirect_response=False)
        trace.refresh_from_db()
        # only what changed
        self.assertEqual(trace.edited_outputs, {"reasoning": "The reviewer says: glowing words."})
        self.assertEqual(trace.review_state, "approved")
        # What DSPy's adapter makes of the edited call, computed here without bftweb's helpers.
        call = trace.calls[0]
        expected = chat_adapter().format_finetune_data(
            signature=signature_from_dict(call["signature"]),
            demos=[],
            inputs=call["inputs"],
            outputs={"reasoning": "The reviewer says: glowing words.", "sentiment": "positive"},
        )["messages"]
        r = self.client.get(self.trace_url(trace))
        shown = r.context["view"]["calls"][0]["messages"]
        self.assertEqual(shown, expected)
        self.assertNotEqual(shown, call["messages"])
        self.assertContains(r, "The reviewer says: glowing words.")
        self.assertContains(r, "re-rendered after edit")
        verdicts = list(trace.decisions.values_list("verdict", "edited_outputs"))
        self.assertEqual(
            verdicts,
            [("edit", {"reasoning": "The reviewer says: glowing words."}), ("approve", None)],
        )

    def test_an_edit_back_to_the_teachers_output_clears_it(self) -> None:

        trace = self.traces[1]
        review.decide(
            trace=trace, user=self.rita, verdict="edit", edited_outputs={"sentiment": "negative"}
        )
        self.login(self.rita)
        self.client.post(self.trace_url(trace, "edit/"), {"field:sentiment": "positive"})
        trace.refresh_from_db()
        self.assertIsNone(trace.edited_outputs)
        self.assertEqual(trace.decisions.count(), 2)

    def test_a_bad_typed_value_is_refused_with_a_reason(self) -> None:

        self.assertEqual(parse_field_value("3", "int"), 3)
        self.assertEqual(parse_field_value("a\nb\n", "list[str]"), ["a", "b"])
        with self.assertRaises(ValueError):
            parse_field_value("three", "int")
        self.login(self.rita)
        r = self.client.post(self.trace_url(self.traces[0], "edit/"), {"field:nonexistent": "x"})
        self.assertEqual(r.status_code, 302)  # unknown form keys are ignored, nothing changes
        self.assertIsNone(Trace.objects.get(pk=self.traces[0].pk).edited_outputs)

    # --- permissions and CSRF ---------------------------------------------------------------

    def test_reviewers_operators_and_owners_decide_viewers_may_not_outsiders_see_nothing(
        self,
    ) -> None:
        url = self.trace_url(self.traces[0], "decide/")
        self.assert_roles("post", url, REVIEW, {"verdict": "approve"})
        self.assertEqual(TraceDecision.objects.count(), 3)

    def test_every_page_is_readable_by_members_only(self) -> None:

        trace_set = trace_sets.freeze_trace_set(
            run=self.bootstrap_run, user=self.alice, selection="passing"
        )
        for url in (
            self.queue,
            f"{self.queue}counts/",
            f"{self.queue}threshold/?full=1",
            self.trace_url(self.traces[0]),
            f"{self.queue}sets/{trace_set.pk}/export.csv",
        ):
            self.assert_roles("get", url, READ_ALL)

    def test_every_review_post_is_refused_to_viewers_and_outsiders(self) -> None:

        posts = {
            self.trace_url(self.traces[0], "decide/"): {"verdict": "reject"},
            self.trace_url(self.traces[0], "edit/"): {"field:sentiment": "positive"},
            f"{self.queue}bulk/": {"action": "reject_errored"},
            f"{self.queue}assign/": {},
            f"{self.queue}claim/": {},
            f"{self.queue}sets/": {"selection": "passing"},
        }
        for url, data in posts.items():
            self.assert_roles("post", url, {"viewer": 403, "outsider": 404}, data)
        self.assert_roles(
            "post",
            f"{self.queue}settings/",
            {"reviewer": 403, "viewer": 403, "outsider": 404},
            {"required_approvals": 2},
        )
        self.assertFalse(TraceDecision.objects.exists())
        self.assertEqual(review.reviewer_stats(self.bootstrap_run)[0]["total"], 0)

    def test_another_projects_run_and_traces_are_404(self) -> None:
        other_run = BootstrapRun.objects.create(
            project=self.p2,
            trainset=self.bootstrap_run.trainset,
            program_version=self.bootstrap_run.program_version,
            teacher=self.bootstrap_run.teacher,
            metric=self.bootstrap_run.metric,
            created_by=self.charlie,
        )
        trace = make_cot_trace(other_run, 0)
        self.login(self.alice)
        self.assertEqual(self.client.get(f"/p/p1/runs/{other_run.pk}/review/").status_code, 404)
        # a trace of another run
        self.assertEqual(self.client.get(f"{self.queue}{trace.pk}/").status_code, 404)
        self.assertEqual(
            self.client.post(f"{self.queue}{trace.pk}/decide/", {"verdict": "approve"}).status_code,
            404,
        )

    def test_every_review_post_needs_the_csrf_token(self) -> None:
        client, token = self.csrf_client(self.alice)
        posts = {
            self.trace_url(self.traces[0], "decide/"): {"verdict": "approve"},
            self.trace_url(self.traces[0], "edit/"): {"field:sentiment": "negative"},
            f"{self.queue}bulk/": {"action": "approve_above", "t": "0.5"},
            f"{self.queue}assign/": {},
            f"{self.queue}claim/": {},
            f"{self.queue}settings/": {"required_approvals": "2"},
            f"{self.queue}sets/": {"selection": "passing"},
        }
        for url, data in posts.items():
            self.assertEqual(client.post(url, data).status_code, 403, url)
        self.assertFalse(TraceDecision.objects.exists())
        self.assertFalse(self.bootstrap_run.trace_sets.exists())
        for url, data in posts.items():  # with the token (as htmx sends it in a header) they work
            r = client.post(url, data, headers={"X-CSRFToken": token})
            self.assertIn(r.status_code, (200, 302), url)
        self.assertTrue(TraceDecision.objects.exists())
        self.assertTrue(self.bootstrap_run.trace_sets.exists())

    # --- escaping -------------------------------------------------------------------------

    def test_hostile_lm_output_renders_escaped_everywhere(self) -> None:

        script = "<script>alert(1)</script>"
        img = '"><img src=x onerror=alert(2)>'
        trace = make_cot_trace(
            self.bootstrap_run,
            8,
            text=f"in {img}",
            reasoning=f"think {script}",
            output=f"out {script}{img}",
            label="positive",
        )
        review.decide(trace=trace, user=self.rita, verdict="comment", comment=f"note {script}")
        self.bootstrap_run.metric = {**self.bootstrap_run.metric, "threshold": 0.0}
        self.bootstrap_run.save()
        self.login(self.alice)
        pages = [
            self.client.get(self.queue),
            self.client.get(self.trace_url(trace)),
            self.client.get(f"{self.queue}threshold/?full=1&t=0"),
            self.client.get(self.queue, {"q": script}),
        ]
        for r in pages:
            body = r.content.decode()
            self.assertNotIn(script, body)
            self.assertNotIn("<img src=x", body)
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;", pages[1].content.decode())
        self.assertIn("&lt;img src=x onerror=alert(2)&gt;", pages[1].content.decode())

    def test_a_plain_client_cannot_use_get_for_decisions(self) -> None:
        client = Client()
        client.force_login(self.alice)
        self.assertEqual(client.get(self.trace_url(self.traces[0], "decide/")).status_code, 405)
