"""Webhooks: a project's URLs told (a signed JSON POST) when a run, fine-tune or evaluation ends.

Each event for each webhook is a WebhookDelivery, queued work like a run (jobs/services/queue.py):
its worker tries the URL with back-off (jobs/work/webhooks.py), and every try is a WebhookAttempt.
How they are made and signed: jobs/services/webhooks.py.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from jobs.models.projects import Project
from jobs.models.queued_work import QueuedWork, WorkSpec


def all_events() -> list[str]:
    return list(Webhook.Event.values)


class Webhook(models.Model):
    class Event(models.TextChoices):
        """The kinds of work whose end a webhook hears of."""

        RUN = "run"
        FINETUNE = "finetune"
        EVALUATION = "evaluation"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=500)
    # Signs each body (HMAC-SHA256). Stored as it is, because signing needs it; shown to the
    # project's owners and operators, as GitHub and Stripe show theirs.
    secret = models.CharField(max_length=100)
    events = models.JSONField(default=all_events)  # a list of Event values
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(QueuedWork):
    """One event sent to one webhook: succeeded once a try got a 2xx answer, failed after the last."""

    WORK = WorkSpec(
        "delivery", "default", "jobs.tasks.run_webhook_delivery", "BFT_WEBHOOK_DELIVERY_TIMEOUT_S"
    )

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="webhook_deliveries"
    )
    event = models.CharField(max_length=32)  # e.g. "finetune.succeeded"
    payload = models.JSONField()
    attempts = models.PositiveSmallIntegerField(default=0)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)  # of the last try

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.event} to {self.webhook_id} ({self.status})"


class WebhookAttempt(models.Model):
    """One HTTP try of a delivery: the answer's status, or why there was none."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_rows"
    )
    number = models.PositiveSmallIntegerField()
    created = models.DateTimeField(auto_now_add=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"try {self.number} of delivery {self.delivery_id}"

    @property
    def ok(self) -> bool:
        return self.response_status is not None and 200 <= self.response_status < 300
