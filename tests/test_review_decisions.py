"""Review decisions as services: the history is the record, state is recomputed from it (one
reviewer or N), bulk actions, thresholds and balance, assignment, and concurrent decisions."""

from __future__ import annotations

import threading

from django.db import connection, connections
from django.test import TransactionTestCase
from django.test.utils import CaptureQueriesContext

from jobs.models import Trace, TraceDecision
from jobs.services import review, review_stats
from tests.base import BaseTestCase, CastMixin
from tests.review_fixtures import make_cot_trace, make_errored_trace
from tests.test_review import FAST_HASHER


def state(trace: Trace) -> tuple[str, int]:
    trace.refresh_from_db()
    return trace.review_state, trace.approvals


@FAST_HASHER
class DecisionTestCase(BaseTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.bootstrap_run = self.make_run()
        self.traces = [make_cot_trace(self.bootstrap_run, i) for i in range(6)]

    def test_with_one_required_approval_the_latest_vote_wins_and_every_vote_is_kept(self) -> None:
        t = self.traces[0]
        review.decide(trace=t, user=self.rita, verdict="approve")
        self.assertEqual(state(t), ("approved", 1))
        review.decide(trace=t, user=self.bob, verdict="reject", comment="label is wrong")
        self.assertEqual(state(t), ("rejected", 1))
        self.assertEqual((t.reviewed_by, t.reviewed_at is not None), (self.bob, True))
        review.decide(trace=t, user=self.rita, verdict="comment", comment="agreed")
        self.assertEqual(state(t), ("rejected", 1))  # a comment is not a vote
        self.assertEqual(
            list(t.decisions.values_list("user__username", "verdict")),
            [
                ("rita", "approve"),
                ("bob", "reject"),
                ("rita", "comment"),
            ],
        )

    def test_with_n_required_approvals_a_trace_waits_for_n_distinct_reviewers(self) -> None:
        review.set_required_approvals(run=self.bootstrap_run, user=self.alice, required=2)
        t = self.traces[0]
        review.decide(trace=t, user=self.rita, verdict="approve")
        # the same reviewer twice counts once
        review.decide(trace=t, user=self.rita, verdict="approve")
        self.assertEqual(state(t), ("unreviewed", 1))
        review.decide(trace=t, user=self.bob, verdict="approve")
        self.assertEqual(state(t), ("approved", 2))
        review.decide(trace=t, user=self.alice, verdict="reject")  # the latest vote rejects
        self.assertEqual(state(t), ("rejected", 2))
        # rita changes her mind: her approval is gone
        review.decide(trace=t, user=self.rita, verdict="reject")
        self.assertEqual(state(t), ("rejected", 1))

    def test_changing_the_rule_recomputes_existing_states(self) -> None:
        a, b = self.traces[0], self.traces[1]
        review.decide(trace=a, user=self.rita, verdict="approve")
        review.decide(trace=b, user=self.rita, verdict="approve")
        review.decide(trace=b, user=self.bob, verdict="approve")
        review.set_required_approvals(run=self.bootstrap_run, user=self.alice, required=2)
        self.assertEqual((state(a), state(b)), (("unreviewed", 1), ("approved", 2)))
        review.set_required_approvals(run=self.bootstrap_run, user=self.alice, required=1)
        self.assertEqual((state(a), state(b)), (("approved", 1), ("approved", 2)))
        with self.assertRaises(ValueError):
            review.set_required_approvals(run=self.bootstrap_run, user=self.alice, required=0)

    def test_a_stale_page_never_overwrites_a_newer_decision(self) -> None:
        """Two reviewers load the same trace; both decide from their stale copies: both count."""
        review.set_required_approvals(run=self.bootstrap_run, user=self.alice, required=2)
        stale_rita = Trace.objects.get(pk=self.traces[0].pk)
        stale_bob = Trace.objects.get(pk=self.traces[0].pk)
        review.decide(trace=stale_rita, user=self.rita, verdict="approve")
        # bob's copy says 0 approvals
        review.decide(trace=stale_bob, user=self.bob, verdict="approve")
        self.assertEqual(state(self.traces[0]), ("approved", 2))
        self.assertEqual(TraceDecision.objects.filter(trace=self.traces[0]).count(), 2)

    def test_bulk_decide_is_history_rows_plus_one_update(self) -> None:
        with CaptureQueriesContext(connection) as ctx:
            n = review.bulk_decide(
                run=self.bootstrap_run,
                user=self.rita,
                traces=self.bootstrap_run.traces.filter(example_index__lt=4),
                verdict="approve",
            )
        self.assertEqual(n, 4)
        updates = [
            q["sql"] for q in ctx.captured_queries if q["sql"].startswith('UPDATE "jobs_trace"')
        ]
        inserts = [
            q["sql"]
            for q in ctx.captured_queries
            if q["sql"].startswith('INSERT INTO "jobs_tracedecision"')
        ]
        self.assertEqual((len(updates), len(inserts)), (1, 1))
        self.assertEqual(self.bootstrap_run.traces.approved().count(), 4)
        batch = set(TraceDecision.objects.values_list("batch", flat=True))
        self.assertEqual(len(batch), 1)
        # Repeating it adds nothing; rejecting the same traces flips them, one vote each.
        self.assertEqual(
            review.bulk_decide(
                run=self.bootstrap_run,
                user=self.rita,
                traces=self.bootstrap_run.traces.filter(example_index__lt=4),
                verdict="approve",
            ),
            0,
        )
        self.assertEqual(
            review.bulk_decide(
                run=self.bootstrap_run,
                user=self.rita,
                traces=self.bootstrap_run.traces.filter(example_index__lt=2),
                verdict="reject",
            ),
            2,
        )
        self.assertEqual(self.bootstrap_run.traces.filter(review_state="rejected").count(), 2)
        self.assertEqual(TraceDecision.objects.count(), 6)

    def test_bulk_and_single_decisions_agree_on_the_state(self) -> None:
        review.set_required_approvals(run=self.bootstrap_run, user=self.alice, required=2)
        review.decide(trace=self.traces[0], user=self.bob, verdict="approve")
        review.bulk_decide(
            run=self.bootstrap_run,
            user=self.rita,
            traces=self.bootstrap_run.traces.all(),
            verdict="approve",
        )
        got = dict(self.bootstrap_run.traces.values_list("example_index", "review_state"))
        self.assertEqual(
            got,
            {
                0: "approved",
                1: "unreviewed",
                2: "unreviewed",
                3: "unreviewed",
                4: "unreviewed",
                5: "unreviewed",
            },
        )
        # recomputing from history changes nothing
        review.recompute_states(self.bootstrap_run.traces.all(), 2)
        self.assertEqual(
            dict(self.bootstrap_run.traces.values_list("example_index", "review_state")), got
        )

    def test_approve_passing_above_a_threshold_and_reject_errored(self) -> None:
        Trace.objects.filter(pk=self.traces[1].pk).update(score=0.6)
        Trace.objects.filter(pk=self.traces[2].pk).update(score=0.9)
        make_cot_trace(self.bootstrap_run, 6, label="positive", output="negative")  # failed
        errored = make_errored_trace(self.bootstrap_run, 7)
        # a human rejection stays
        review.decide(trace=self.traces[5], user=self.bob, verdict="reject")
        n = review.approve_passing_above(run=self.bootstrap_run, user=self.rita, threshold=0.8)
        self.assertEqual(n, 4)  # 0, 2, 3, 4: passing, ≥ 0.8, unreviewed
        self.assertEqual(
            sorted(self.bootstrap_run.traces.approved().values_list("example_index", flat=True)),
            [0, 2, 3, 4],
        )
        self.assertEqual(review.reject_errored(run=self.bootstrap_run, user=self.rita), 1)
        self.assertEqual(state(errored)[0], "rejected")
        self.assertEqual(review.reject_errored(run=self.bootstrap_run, user=self.rita), 0)

    def test_the_threshold_summary_counts_kept_traces_and_warns_when_lopsided(self) -> None:
        # Labels alternate; the teacher said "positive" on every trace it passed above 0.5.
        for t in self.traces:
            Trace.objects.filter(pk=t.pk).update(score=0.9 if t.example_index % 2 else 0.2)
        summary = review_stats.threshold_summary(self.bootstrap_run, 0.5)
        self.assertEqual((summary["kept"], summary["to_approve"], summary["approved"]), (3, 3, 0))
        labels = summary["balance"]["labels"]
        self.assertEqual(labels.values, [("positive", 3, 1.0)])
        self.assertTrue(labels.lopsided)
        summary = review_stats.threshold_summary(self.bootstrap_run, 0.0)
        self.assertEqual(summary["kept"], 6)
        self.assertFalse(summary["balance"]["labels"].lopsided)
        self.assertEqual(sum(b.count for b in summary["histogram"].bins), 6)
        self.assertEqual([b.count for b in summary["histogram"].bins if b.count], [3, 3])

    def test_the_balance_uses_edited_outputs(self) -> None:
        review.decide(
            trace=self.traces[1],
            user=self.rita,
            verdict="edit",
            edited_outputs={"sentiment": "neutral"},
        )
        outputs = review_stats.balance(self.bootstrap_run, self.bootstrap_run.traces.all())[
            "outputs"
        ]
        self.assertIn(("neutral", 1, 1 / 6), outputs.values)

    def test_the_threshold_panel_renders_a_histogram_and_the_warning(self) -> None:
        for t in self.traces:
            Trace.objects.filter(pk=t.pk).update(score=0.9 if t.example_index % 2 else 0.2)
        self.client.force_login(self.rita)
        r = self.client.get(
            f"/p/p1/runs/{self.bootstrap_run.pk}/review/threshold/",
            {"t": "0.5"},
            headers={"HX-Request": "true"},
        )
        self.assertContains(r, "<svg", html=False)
        self.assertContains(r, 'class="kept"', count=10)
        self.assertContains(r, 'id="balance-warning"')
        self.assertContains(r, '<strong id="kept-count">3</strong>', html=True)
        r = self.client.get(
            f"/p/p1/runs/{self.bootstrap_run.pk}/review/threshold/", {"t": "0", "full": "1"}
        )
        self.assertContains(r, 'type="range"')
        self.assertNotContains(r, 'id="balance-warning"')

    def test_bulk_posts_from_the_queue(self) -> None:
        self.client.force_login(self.rita)
        url = f"/p/p1/runs/{self.bootstrap_run.pk}/review/bulk/"
        r = self.client.post(url, {"action": "approve_filtered", "q": "number 3"})
        self.assertRedirects(r, f"/p/p1/runs/{self.bootstrap_run.pk}/review/?q=number+3")
        self.assertEqual(
            list(self.bootstrap_run.traces.approved().values_list("example_index", flat=True)), [3]
        )
        r = self.client.post(
            url, {"action": "reject_filtered", "outcome": "passed"}, headers={"HX-Request": "true"}
        )
        self.assertEqual(
            r["HX-Redirect"], f"/p/p1/runs/{self.bootstrap_run.pk}/review/?outcome=passed"
        )
        self.assertEqual(self.bootstrap_run.traces.filter(review_state="rejected").count(), 6)
        r = self.client.post(url, {"action": "approve_above", "t": "0.5"})
        # every one was rejected by a person
        self.assertEqual(self.bootstrap_run.traces.approved().count(), 0)
        self.assertEqual(self.client.post(url, {"action": "nope"}).status_code, 400)

    # --- team -----------------------------------------------------------------------------

    def test_assign_evenly_splits_unassigned_unreviewed_traces_into_blocks(self) -> None:
        for i in range(6, 10):
            make_cot_trace(self.bootstrap_run, i)
        review.decide(trace=self.traces[0], user=self.rita, verdict="approve")
        result = review.assign_evenly(run=self.bootstrap_run, user=self.alice)
        # victor only views
        self.assertEqual(
            {u.username: n for u, n in result.items()}, {"alice": 3, "bob": 3, "rita": 3}
        )
        got = dict(self.bootstrap_run.traces.values_list("example_index", "assigned_to__username"))
        self.assertEqual(
            got,
            {
                0: None,
                1: "alice",
                2: "alice",
                3: "alice",
                4: "bob",
                5: "bob",
                6: "bob",
                7: "rita",
                8: "rita",
                9: "rita",
            },
        )
        # Nothing left.
        self.assertEqual(
            sum(review.assign_evenly(run=self.bootstrap_run, user=self.alice).values()), 0
        )

    def test_claim_next_hands_out_distinct_traces(self) -> None:
        first = review.claim_next(run=self.bootstrap_run, user=self.rita)
        second = review.claim_next(run=self.bootstrap_run, user=self.bob)
        assert first is not None and second is not None
        self.assertEqual((first.example_index, second.example_index), (0, 1))
        # Still hers until decided.
        self.assertEqual(review.claim_next(run=self.bootstrap_run, user=self.rita), first)
        review.decide(trace=first, user=self.rita, verdict="approve")
        third = review.claim_next(run=self.bootstrap_run, user=self.rita)
        assert third is not None
        self.assertEqual(third.example_index, 2)
        self.client.force_login(self.rita)
        r = self.client.post(f"/p/p1/runs/{self.bootstrap_run.pk}/review/claim/")
        trace = Trace.objects.get(run=self.bootstrap_run, example_index=2)
        self.assertRedirects(
            r, f"/p/p1/runs/{self.bootstrap_run.pk}/review/{trace.pk}/?state=unreviewed&mine=1"
        )

    def test_per_reviewer_counts(self) -> None:
        review.decide(trace=self.traces[0], user=self.rita, verdict="approve")
        review.decide(trace=self.traces[1], user=self.rita, verdict="reject")
        review.decide(
            trace=self.traces[2], user=self.bob, verdict="edit", edited_outputs={"sentiment": "x"}
        )
        Trace.objects.filter(pk__in=[self.traces[3].pk, self.traces[1].pk]).update(
            assigned_to=self.rita
        )
        stats = {row["user"].username: row for row in review.reviewer_stats(self.bootstrap_run)}
        self.assertEqual(
            {k: stats["rita"][k] for k in ("approve", "reject", "edit", "open", "total")},
            {"approve": 1, "reject": 1, "edit": 0, "open": 1, "total": 2},
        )
        self.assertEqual(stats["bob"]["edit"], 1)
        self.client.force_login(self.victor)
        r = self.client.get(f"/p/p1/runs/{self.bootstrap_run.pk}/review/")
        self.assertContains(r, 'id="reviewer-table"')
        self.assertNotContains(r, "Split unassigned")  # a viewer cannot assign


@FAST_HASHER
class ConcurrentDecisionTestCase(CastMixin, TransactionTestCase):
    """Real threads, real transactions (the test database is a file, so each thread has its own
    connection): decisions on one trace at the same moment are all kept."""

    def test_concurrent_decisions_on_one_trace_are_all_recorded(self) -> None:
        run = self.make_run()
        trace = make_cot_trace(run, 0)
        review.set_required_approvals(run=run, user=self.alice, required=3)
        barrier = threading.Barrier(3)
        errors: list[BaseException] = []

        def decide(user) -> None:
            try:
                # every thread read the trace before anyone decided
                stale = Trace.objects.get(pk=trace.pk)
                barrier.wait(timeout=10)
                review.decide(trace=stale, user=user, verdict="approve")
            except BaseException as e:  # reported by the assertion below
                errors.append(e)
            finally:
                connections.close_all()

        threads = [
            threading.Thread(target=decide, args=(u,)) for u in (self.alice, self.bob, self.rita)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        self.assertEqual(errors, [])
        self.assertEqual(TraceDecision.objects.filter(trace=trace).count(), 3)
        self.assertEqual(state(trace), ("approved", 3))

    def test_a_bulk_action_and_a_single_decision_at_once_both_count(self) -> None:
        run = self.make_run()
        traces = [make_cot_trace(run, i) for i in range(20)]
        review.set_required_approvals(run=run, user=self.alice, required=2)
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def bulk() -> None:
            try:
                barrier.wait(timeout=10)
                review.bulk_decide(
                    run=run, user=self.rita, traces=run.traces.all(), verdict="approve"
                )
            except BaseException as e:
                errors.append(e)
            finally:
                connections.close_all()

        def single() -> None:
            try:
                barrier.wait(timeout=10)
                review.decide(trace=traces[7], user=self.bob, verdict="approve")
            except BaseException as e:
                errors.append(e)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=bulk), threading.Thread(target=single)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        self.assertEqual(errors, [])
        self.assertEqual(TraceDecision.objects.count(), 21)
        self.assertEqual(state(traces[7]), ("approved", 2))
        self.assertEqual(run.traces.filter(review_state="unreviewed", approvals=1).count(), 19)
