"""Review: every reviewer decision (the history is the record) and frozen trace sets."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.timezone import now

from jobs.models.runs import BootstrapRun, Trace


class TraceDecision(models.Model):
    """One reviewer action on a trace. Rows are only ever inserted: the history is the record,
    and the trace's review_state / approvals / edited_outputs are recomputed from it."""

    class Verdict(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"
        EDIT = "edit"
        COMMENT = "comment"

    VOTES = (Verdict.APPROVE, Verdict.REJECT)

    run = models.ForeignKey(BootstrapRun, on_delete=models.CASCADE, related_name="decisions")
    trace = models.ForeignKey(Trace, on_delete=models.CASCADE, related_name="decisions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    verdict = models.CharField(max_length=8, choices=Verdict)
    comment = models.TextField(blank=True)
    edited_outputs = models.JSONField(null=True, blank=True)
    batch = models.UUIDField(null=True, blank=True, db_index=True)  # one bulk action's rows
    created = models.DateTimeField(default=now)

    class Meta:
        ordering = ["trace", "pk"]
        indexes = [
            models.Index(fields=["trace", "verdict", "user"], name="decision_vote_idx"),
            models.Index(fields=["run", "user", "verdict"], name="decision_reviewer_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.verdict} trace {self.trace_id}"


class TraceSet(models.Model):
    """A frozen, versioned selection of a run's traces, with each trace's decision at freeze time."""

    run = models.ForeignKey(BootstrapRun, on_delete=models.CASCADE, related_name="trace_sets")
    version = models.PositiveIntegerField()
    name = models.CharField(max_length=200)
    # How the traces were chosen, e.g. {"selection": "approved"}.
    rule = models.JSONField(default=dict)
    trace_count = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created = models.DateTimeField(default=now)

    class Meta:
        ordering = ["run", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["run", "version"], name="unique_trace_set_version")
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version} ({self.trace_count} traces)"


class TraceSetItem(models.Model):
    """One trace of a frozen set, as it was decided when the set was frozen."""

    trace_set = models.ForeignKey(TraceSet, on_delete=models.CASCADE, related_name="items")
    trace = models.ForeignKey(Trace, on_delete=models.RESTRICT, related_name="+")
    example_index = models.PositiveIntegerField()
    review_state = models.CharField(max_length=16, choices=Trace.ReviewState)
    approvals = models.PositiveSmallIntegerField(default=0)
    edited_outputs = models.JSONField(null=True, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    last_decision = models.ForeignKey(
        TraceDecision, on_delete=models.RESTRICT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["trace_set", "example_index"]
        constraints = [
            models.UniqueConstraint(fields=["trace_set", "trace"], name="unique_trace_set_item")
        ]

    def __str__(self) -> str:
        return f"{self.trace_set} #{self.example_index}"
