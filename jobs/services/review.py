"""Team review of bootstrapped traces: the queue's filters, decisions, bulk actions, edits, assignment.

The history is the record. Every reviewer action inserts a :class:`TraceDecision`; a trace's
``review_state``, ``approvals``, ``reviewed_by``/``reviewed_at`` and ``edited_outputs`` are
recomputed from its decisions in the same transaction, under a row lock on the trace. Two
reviewers deciding at once therefore both land in the history, and the state is the one the
history implies whichever commits last.

The rule (``BootstrapRun.required_approvals`` = N, default 1): each reviewer's vote is their
latest approve/reject. If the latest vote of anyone is a reject, the trace is rejected; otherwise
it is approved once N reviewers' votes are approvals, and unreviewed (pending) before that. With
N = 1 this is simply "the latest decision wins".

Training never reads live review state: a fine-tune trains on a :class:`TraceSet`, a frozen,
versioned copy of the selection with each trace's decision and edits at freeze time
(jobs/services/trace_sets.py). The threshold page's histogram and label balance:
jobs/services/review_stats.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django.core.paginator import Page, Paginator
from django.db import connection, transaction
from django.db.models import (
    Case,
    Count,
    Exists,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.db.models.lookups import Exact, GreaterThanOrEqual
from django.utils.timezone import now

from jobs.engine.types import DEMO_PLACEHOLDER, copies_placeholder
from jobs.models import (
    BootstrapRun,
    Membership,
    Trace,
    TraceDecision,
)
from jobs.values import parse_float

if TYPE_CHECKING:
    from django.contrib.auth.models import User

BULK_BATCH = 2000

Verdict = TraceDecision.Verdict
State = Trace.ReviewState
OUTCOMES = ("passed", "failed", "errored")
STATES = ("unreviewed", "approved", "rejected", "edited")


# --- filtering and counts ---------------------------------------------------------------------


def json_text_term(term: str) -> str:
    """``term`` as it appears inside a stored JSON string (quotes and backslashes escaped; SQLite
    also stores non-ASCII as \\uXXXX because Django's JSONField dumps with ensure_ascii)."""
    return json.dumps(term, ensure_ascii=connection.vendor != "postgresql")[1:-1]


@dataclass(frozen=True)
class TraceFilter:
    """The review queue's filters, parsed leniently from a query string (bad values are ignored)."""

    outcome: str = ""
    state: str = ""
    score_min: float | None = None
    score_max: float | None = None
    q: str = ""
    mine: bool = False

    @classmethod
    def from_query(cls, data: Mapping[str, Any]) -> TraceFilter:
        outcome = str(data.get("outcome", ""))
        state = str(data.get("state", ""))
        return cls(
            outcome=outcome if outcome in OUTCOMES else "",
            state=state if state in STATES else "",
            score_min=parse_float(data.get("min")),
            score_max=parse_float(data.get("max")),
            q=str(data.get("q", "")).strip()[:200],
            mine=str(data.get("mine", "")) in ("1", "on", "true"),
        )

    @property
    def is_empty(self) -> bool:
        return self == TraceFilter()

    def params(self) -> dict[str, str]:
        out = {"outcome": self.outcome, "state": self.state, "q": self.q}
        if self.score_min is not None:
            out["min"] = f"{self.score_min:g}"
        if self.score_max is not None:
            out["max"] = f"{self.score_max:g}"
        if self.mine:
            out["mine"] = "1"
        return {k: v for k, v in out.items() if v}

    def querystring(self) -> str:
        return urlencode(self.params())

    def apply(self, traces: QuerySet[Trace], user: Any = None) -> QuerySet[Trace]:
        if self.outcome == "errored":
            traces = traces.filter(parsed=False)
        elif self.outcome:
            traces = traces.filter(parsed=True, passed=self.outcome == "passed")
        if self.state == "edited":
            traces = traces.filter(edited=True)
        elif self.state:
            traces = traces.filter(review_state=self.state)
        if self.score_min is not None:
            traces = traces.filter(score__gte=self.score_min)
        if self.score_max is not None:
            traces = traces.filter(score__lte=self.score_max)
        if self.q:
            term = json_text_term(self.q)
            traces = traces.filter(
                Q(inputs__icontains=term)
                | Q(labels__icontains=term)
                | Q(outputs__icontains=term)
                | Q(edited_outputs__icontains=term)
            )
        if self.mine and user is not None:
            traces = traces.filter(assigned_to=user)
        return traces


def queue_counts(run: BootstrapRun, user: Any) -> dict[str, int]:
    """Counts per outcome and per review state, in one aggregate query."""
    counts = run.traces.aggregate(
        n_total=Count("pk"),
        n_passed=Count("pk", filter=Q(parsed=True, passed=True)),
        n_failed=Count("pk", filter=Q(parsed=True, passed=False)),
        n_errored=Count("pk", filter=Q(parsed=False)),
        n_unreviewed=Count("pk", filter=Q(review_state=State.UNREVIEWED)),
        n_approved=Count("pk", filter=Q(review_state=State.APPROVED)),
        n_rejected=Count("pk", filter=Q(review_state=State.REJECTED)),
        n_edited=Count("pk", filter=Q(edited=True)),
        n_mine=Count("pk", filter=Q(assigned_to=user)),
        n_mine_open=Count("pk", filter=Q(assigned_to=user, review_state=State.UNREVIEWED)),
    )
    return {name.removeprefix("n_"): value for name, value in counts.items()}


def queue_page_traces(traces: QuerySet[Trace]) -> QuerySet[Trace]:
    """The list's rows: the big ``calls`` column stays in the database; a placeholder flag comes
    from it per returned row only."""
    return (
        traces.defer("calls")
        .select_related("assigned_to", "reviewed_by")
        .annotate(
            has_placeholder=Case(
                When(calls__icontains=DEMO_PLACEHOLDER, then=Value(True)), default=Value(False)
            )
        )
        .order_by("example_index")
    )


def queue_page(traces: QuerySet[Trace], number: Any, per_page: int) -> Page[Trace]:
    """One page of the filtered queue. The count and the page's ids come from the index alone
    (trace_review_cover_idx holds every filter column and example_index); only the page's rows
    are then read."""
    ids = traces.order_by("example_index").values_list("pk", flat=True)
    page: Page[Any] = Paginator(ids, per_page).get_page(number)  # of ids, then of their rows
    page_ids = list(page.object_list)
    rows = {t.pk: t for t in queue_page_traces(Trace.objects.filter(pk__in=page_ids))}
    page.object_list = [rows[pk] for pk in page_ids if pk in rows]
    return page


def neighbours(traces: QuerySet[Trace], trace: Trace) -> tuple[int | None, int | None]:
    """(previous pk, next pk) of ``trace`` within a filtered queue, by example index."""
    ids = traces.order_by()
    prev = (
        ids.filter(example_index__lt=trace.example_index)
        .order_by("-example_index")
        .values_list("pk", flat=True)
        .first()
    )
    nxt = (
        ids.filter(example_index__gt=trace.example_index)
        .order_by("example_index")
        .values_list("pk", flat=True)
        .first()
    )
    return prev, nxt


# --- decisions --------------------------------------------------------------------------------


def _vote_later_by_same_user() -> Exists:
    return Exists(
        TraceDecision.objects.filter(
            trace=OuterRef("trace"),
            user=OuterRef("user"),
            verdict__in=TraceDecision.VOTES,
            pk__gt=OuterRef("pk"),
        )
    )


def _state_expressions(required_approvals: int) -> dict[str, Any]:
    """Column values recomputed from the history, as SQL (one UPDATE for any number of traces)."""
    votes = TraceDecision.objects.filter(
        trace=OuterRef("pk"), verdict__in=TraceDecision.VOTES
    ).order_by("-pk")
    last_verdict = Subquery(votes.values("verdict")[:1])
    current_approvals = (
        TraceDecision.objects.filter(trace=OuterRef("pk"), verdict=Verdict.APPROVE)
        .exclude(_vote_later_by_same_user())
        .order_by()
        .values("trace")
        .annotate(n=Count("pk"))
        .values("n")
    )
    approvals = Coalesce(Subquery(current_approvals), Value(0))
    return {
        "approvals": approvals,
        "review_state": Case(
            When(Exact(last_verdict, Verdict.REJECT), then=Value(State.REJECTED)),
            When(
                GreaterThanOrEqual(approvals, max(1, required_approvals)),
                then=Value(State.APPROVED),
            ),
            default=Value(State.UNREVIEWED),
        ),
        "reviewed_by": Subquery(votes.values("user")[:1]),
        "reviewed_at": Subquery(votes.values("created")[:1]),
    }


def recompute_states(traces: QuerySet[Trace], required_approvals: int) -> int:
    """Recompute review state from history for ``traces`` in one UPDATE; returns rows updated."""
    return traces.order_by().update(**_state_expressions(required_approvals))


def decide(
    *,
    trace: Trace,
    user: User,
    verdict: str,
    comment: str = "",
    edited_outputs: dict[str, Any] | None = None,
) -> TraceDecision:
    """Record one decision and recompute the trace's state from its whole history.

    ``edited_outputs`` (verdict "edit") are the output fields that differ from the teacher's; an
    empty dict clears a previous edit.
    """
    if verdict not in Verdict.values:
        raise ValueError(f"Unknown verdict {verdict!r}.")
    comment = comment.strip()
    if verdict == Verdict.COMMENT and not comment:
        raise ValueError("Write a comment first.")
    if verdict == Verdict.EDIT:
        if edited_outputs is None:
            raise ValueError("An edit needs the edited output fields.")
        if trace.error:
            raise ValueError(
                "This trace did not parse, so it never trains: there is nothing to edit."
            )
        if edited_outputs:
            from jobs.engine.training_data import rerender_trace

            rerender_trace(trace.as_record(), edited_outputs)  # unknown fields raise ValueError
    with transaction.atomic():
        locked = Trace.objects.select_for_update().select_related("run").get(pk=trace.pk)
        decision = TraceDecision.objects.create(
            run_id=locked.run_id,
            trace=locked,
            user=user,
            verdict=verdict,
            comment=comment,
            edited_outputs=(edited_outputs or None) if verdict == Verdict.EDIT else None,
        )
        changes: dict[str, Any] = {}
        if verdict == Verdict.EDIT:
            latest_edit = locked.decisions.filter(verdict=Verdict.EDIT).order_by("-pk").first()
            changes["edited_outputs"] = latest_edit.edited_outputs if latest_edit else None
            changes["edited"] = changes["edited_outputs"] is not None
        if verdict in TraceDecision.VOTES:
            changes.update(_state_expressions(locked.run.required_approvals))
        if changes:
            Trace.objects.filter(pk=locked.pk).update(**changes)
    trace.refresh_from_db()
    return decision


def bulk_decide(
    *,
    run: BootstrapRun,
    user: User,
    traces: QuerySet[Trace],
    verdict: str,
    comment: str = "",
) -> int:
    """Approve or reject many traces: history rows by bulk_create, then one UPDATE.

    Traces whose current vote by ``user`` is already ``verdict`` are skipped, so repeating a bulk
    action adds nothing. Returns how many traces got a decision.
    """
    if verdict not in TraceDecision.VOTES:
        raise ValueError("Bulk actions approve or reject.")
    my_vote = (
        TraceDecision.objects.filter(
            trace=OuterRef("pk"), user=user, verdict__in=TraceDecision.VOTES
        )
        .order_by("-pk")
        .values("verdict")[:1]
    )
    batch = uuid.uuid4()
    with transaction.atomic():
        targets = (
            traces.filter(run=run)
            .annotate(my_vote=Subquery(my_vote))
            .filter(Q(my_vote__isnull=True) | ~Q(my_vote=verdict))
            .order_by("example_index")
            .select_for_update()
        )
        ids = list(targets.values_list("pk", flat=True))
        if not ids:
            return 0
        created = now()
        for start in range(0, len(ids), BULK_BATCH):
            TraceDecision.objects.bulk_create(
                TraceDecision(
                    run=run,
                    trace_id=pk,
                    user=user,
                    verdict=verdict,
                    comment=comment,
                    batch=batch,
                    created=created,
                )
                for pk in ids[start : start + BULK_BATCH]
            )
        batch_traces = TraceDecision.objects.filter(batch=batch).values("trace")
        recompute_states(Trace.objects.filter(pk__in=batch_traces), run.required_approvals)
    return len(ids)


def approve_passing_above(*, run: BootstrapRun, user: User, threshold: float) -> int:
    """Approve every unreviewed trace that passed, parsed and scored at least ``threshold``."""
    traces = run.traces.filter(
        review_state=State.UNREVIEWED, passed=True, parsed=True, score__gte=threshold
    )
    return bulk_decide(
        run=run,
        user=user,
        traces=traces,
        verdict=Verdict.APPROVE,
        comment=f"bulk: passing with score ≥ {threshold:g}",
    )


def reject_errored(*, run: BootstrapRun, user: User) -> int:
    traces = run.traces.filter(parsed=False).exclude(review_state=State.REJECTED)
    return bulk_decide(
        run=run, user=user, traces=traces, verdict=Verdict.REJECT, comment="bulk: errored"
    )


def set_required_approvals(*, run: BootstrapRun, user: User, required: int) -> None:
    """Change the rule and recompute every reviewed trace of the run under it."""
    if not 1 <= required <= 20:
        raise ValueError("Required approvals must be between 1 and 20.")
    with transaction.atomic():
        BootstrapRun.objects.filter(pk=run.pk).update(required_approvals=required)
        run.required_approvals = required
        reviewed = TraceDecision.objects.filter(run=run, verdict__in=TraceDecision.VOTES).values(
            "trace"
        )
        recompute_states(run.traces.filter(pk__in=reviewed), required)


# --- editing ----------------------------------------------------------------------------------


def save_edit(
    *, trace: Trace, user: User, edits: dict[str, Any], comment: str, approve: bool
) -> None:
    """A reviewer's edit of the outputs (an empty ``edits`` clears an earlier edit), and their
    approval of the edited trace when ``approve``."""
    with transaction.atomic():
        decide(
            trace=trace,
            user=user,
            verdict=Verdict.EDIT,
            comment=comment,
            edited_outputs=edits,
        )
        if approve:
            decide(trace=trace, user=user, verdict=Verdict.APPROVE)


def training_view(trace: Trace) -> dict[str, Any]:
    """The trace as the student would train on it: per call, the exact chat messages (re-rendered
    through the engine's adapter when a reviewer edited outputs)."""
    record = trace.as_record()
    rendered = record
    error = ""
    if trace.edited_outputs and not trace.error:
        from jobs.engine.training_data import rerender_trace

        try:
            rendered = rerender_trace(record, trace.edited_outputs)
        except Exception as e:  # an edit the adapter cannot render: say so, show the original
            error = f"could not re-render the edit: {e}"
    calls = []
    for original, call in zip(trace.calls, rendered["calls"], strict=True):
        outputs = call.get("outputs") or {}
        reasoning = outputs.get("reasoning")
        calls.append(
            {
                "predictor": call.get("predictor", ""),
                "instructions": call["signature"].get("instructions", ""),
                "inputs": call.get("inputs") or {},
                "outputs": outputs,
                "reasoning": reasoning,
                "placeholder": copies_placeholder(outputs.values()),
                "error": call.get("error", ""),
                "raw": call.get("raw", ""),
                "messages": call.get("messages") or [],
                "edited": call.get("outputs") != original.get("outputs"),
                "original_outputs": original.get("outputs") or {},
                "trains": not call.get("error"),
            }
        )
    return {
        "calls": calls,
        "placeholder": any(c["placeholder"] for c in calls),
        "error": error,
        "outputs": rendered.get("outputs", {}),
    }


def history(trace: Trace) -> QuerySet[TraceDecision]:
    return trace.decisions.select_related("user").order_by("-pk")


# --- team -------------------------------------------------------------------------------------


def reviewers_of(run: BootstrapRun) -> list[Any]:
    from django.contrib.auth import get_user_model

    roles = [Membership.Role.OWNER, Membership.Role.OPERATOR, Membership.Role.REVIEWER]
    return list(
        get_user_model()
        .objects.filter(memberships__project_id=run.project_id, memberships__role__in=roles)
        .order_by("username")
    )


def assign_evenly(
    *, run: BootstrapRun, user: User, reviewers: list[Any] | None = None
) -> dict[Any, int]:
    """Split the unassigned unreviewed traces into one contiguous block per reviewer."""
    reviewers = reviewers if reviewers is not None else reviewers_of(run)
    if not reviewers:
        raise ValueError("Nobody in this project may review.")
    pool = run.traces.filter(review_state=State.UNREVIEWED, assigned_to__isnull=True)
    with transaction.atomic():
        indexes = list(
            pool.select_for_update()
            .order_by("example_index")
            .values_list("example_index", flat=True)
        )
        share, extra = divmod(len(indexes), len(reviewers))
        result: dict[Any, int] = {}
        start = 0
        for i, reviewer in enumerate(reviewers):
            size = share + (1 if i < extra else 0)
            if size:
                block = pool.filter(
                    example_index__gte=indexes[start], example_index__lte=indexes[start + size - 1]
                )
                block.update(assigned_to=reviewer)
            result[reviewer] = size
            start += size
    return result


def claim_next(*, run: BootstrapRun, user: User) -> Trace | None:
    """The user's next trace: their own open assignment first, else the first unassigned unreviewed
    trace, claimed with a conditional UPDATE (two reviewers never claim the same one)."""
    not_mine_yet = ~Exists(
        TraceDecision.objects.filter(
            trace=OuterRef("pk"), user=user, verdict__in=TraceDecision.VOTES
        )
    )
    open_traces = (
        run.traces.filter(review_state=State.UNREVIEWED)
        .filter(not_mine_yet)
        .order_by("example_index")
    )
    mine = open_traces.filter(assigned_to=user).first()
    if mine is not None:
        return mine
    for _ in range(10):
        candidate = (
            open_traces.filter(assigned_to__isnull=True).values_list("pk", flat=True).first()
        )
        if candidate is None:
            return None
        if (
            Trace.objects.filter(pk=candidate, assigned_to__isnull=True).update(assigned_to=user)
            == 1
        ):
            return Trace.objects.get(pk=candidate)
    return None


def reviewer_stats(run: BootstrapRun) -> list[dict[str, Any]]:
    """Per reviewer: decisions by verdict, and assigned traces (open / all)."""
    decided = {
        row["user"]: row
        for row in TraceDecision.objects.filter(run=run)
        .order_by()
        .values("user")
        .annotate(
            approve=Count("pk", filter=Q(verdict=Verdict.APPROVE)),
            reject=Count("pk", filter=Q(verdict=Verdict.REJECT)),
            edit=Count("pk", filter=Q(verdict=Verdict.EDIT)),
            comment=Count("pk", filter=Q(verdict=Verdict.COMMENT)),
        )
    }
    assigned = {
        row["assigned_to"]: row
        for row in run.traces.exclude(assigned_to=None)
        .order_by()
        .values("assigned_to")
        .annotate(total=Count("pk"), open=Count("pk", filter=Q(review_state=State.UNREVIEWED)))
    }
    users = {u.pk: u for u in reviewers_of(run)}
    missing = (set(decided) | set(assigned)) - set(users)
    if missing:
        from django.contrib.auth import get_user_model

        users.update({u.pk: u for u in get_user_model().objects.filter(pk__in=missing)})
    empty = {"approve": 0, "reject": 0, "edit": 0, "comment": 0, "total": 0, "open": 0}
    rows = []
    for pk, user in sorted(users.items(), key=lambda kv: kv[1].get_username()):
        row = {"user": user, **empty}
        row.update({k: v for k, v in decided.get(pk, {}).items() if k != "user"})
        row.update({k: v for k, v in assigned.get(pk, {}).items() if k != "assigned_to"})
        rows.append(row)
    return rows
