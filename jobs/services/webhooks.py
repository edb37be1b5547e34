"""Webhooks: tell a project's URLs, with a signed JSON POST, when a run, fine-tune or evaluation ends.

- Registration: the URL must match a host or URL prefix in the BFT_WEBHOOK_HOSTS setting (the
  operator's allow-list, the same rule as a model's api_base and BFT_LM_API_BASES), checked again
  before every try. Redirects are not followed.
- The seam: every queued row's transition to succeeded, failed or cancelled sends
  ``jobs.models.queued_work.work_ended``; :func:`on_work_ended` (connected in JobsConfig.ready)
  queues one WebhookDelivery per subscribed webhook once the transition commits.
- Delivery: a WebhookDelivery is queued work (jobs/services/queue.py, queue "default"). Its worker
  (jobs/work/webhooks.py) POSTs the payload, waiting BFT_WEBHOOK_BACKOFF_S, then twice that, ...
  between tries, up to BFT_WEBHOOK_ATTEMPTS tries; a 2xx answer ends it. Every try is a
  WebhookAttempt row. A failed delivery can be retried like any queued row (the API's redeliver).
- Signature: ``X-Bftweb-Signature: sha256=<hex>``, the HMAC-SHA256 of the exact body with the
  webhook's secret (:func:`signature`); ``X-Bftweb-Event`` and ``X-Bftweb-Delivery`` name the
  event and the delivery (the same on every try, so receivers can drop repeats).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils.timezone import now

from jobs.models import (
    BootstrapRun,
    Evaluation,
    FinetuneJob,
    Project,
    QueuedWork,
    Webhook,
    WebhookDelivery,
)
from jobs.services import queue
from jobs.services.model_policy import allowed_url_problem

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Bftweb-Signature"
EVENT_HEADER = "X-Bftweb-Event"
DELIVERY_HEADER = "X-Bftweb-Delivery"
USER_AGENT = "bftweb-webhooks/1"
# The kinds of work a webhook hears of, by model, and the API path of each kind's rows.
KINDS: dict[type[QueuedWork], str] = {
    BootstrapRun: Webhook.Event.RUN,
    FinetuneJob: Webhook.Event.FINETUNE,
    Evaluation: Webhook.Event.EVALUATION,
}
API_PATHS = {"run": "runs", "finetune": "finetunes", "evaluation": "evaluations"}
# What the payload says of each kind, besides kind, id, status, error and the times.
SUMMARY_FIELDS = {
    "run": ("total", "done", "passed", "failed", "errored", "skipped"),
    "finetune": ("run_id", "trace_set_id", "step", "total_steps", "last_loss", "output_model_id"),
    "evaluation": ("finetune_job_id", "rows", "total", "done", "verdict"),
}


class WebhookRefused(ValueError):
    """A webhook this installation does not allow; the message names the setting to change."""


# --- registration ------------------------------------------------------------------------------


def url_problem(url: str) -> str | None:
    """Why ``url`` may not receive webhooks here, or None."""
    return allowed_url_problem(
        url,
        setting="BFT_WEBHOOK_HOSTS",
        what="URL",
        credentials_hint="check the signature instead",
    )


def create_webhook(
    *, project: Project, user: User, url: str, events: list[str] | None = None
) -> Webhook:
    """Register ``url`` for ``events`` (default: every kind); WebhookRefused names the problem."""
    url = url.strip()
    if problem := url_problem(url):
        raise WebhookRefused(problem)
    events = list(dict.fromkeys(events if events is not None else Webhook.Event.values))
    unknown = [e for e in events if e not in Webhook.Event.values]
    if unknown or not events:
        raise WebhookRefused(
            f"Choose events among {', '.join(Webhook.Event.values)}"
            + (f" (not {', '.join(unknown)})." if unknown else ".")
        )
    return Webhook.objects.create(
        project=project, url=url, secret=secrets.token_hex(32), events=events, created_by=user
    )


def delete_webhook(*, webhook: Webhook, user: User) -> None:
    """Remove the webhook, its deliveries and their tries (a running delivery stops after its try)."""
    webhook.delete()


def signature(secret: str, body: bytes) -> str:
    """The X-Bftweb-Signature value: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does (in constant time): does ``header`` sign ``body`` with ``secret``?"""
    return hmac.compare_digest(signature(secret, body), header or "")


# --- events ------------------------------------------------------------------------------------


def on_work_ended(sender: type[QueuedWork], row: QueuedWork, status: str, **kwargs: Any) -> None:
    """work_ended's receiver: once the transition commits, queue the row's deliveries."""
    if sender not in KINDS:
        return
    project_id = getattr(row, "project_id", None)
    if (
        project_id is None
        or not Webhook.objects.filter(project_id=project_id, active=True).exists()
    ):
        return
    pk = row.pk
    transaction.on_commit(lambda: queue_deliveries(sender, pk, status), robust=True)


def payload(row: QueuedWork, kind: str, status: str) -> dict[str, Any]:
    project: Project = row.project  # type: ignore[attr-defined]  # each kind has one
    obj: dict[str, Any] = {
        "kind": kind,
        "id": row.pk,
        "status": status,
        "error": row.error,
        "created": row.created.isoformat() if row.created else None,
        "finished": row.finished.isoformat() if row.finished else None,
        "url": f"/api/v1/projects/{project.slug}/{API_PATHS[kind]}/{row.pk}/",
    }
    for name in SUMMARY_FIELDS[kind]:
        obj[name.removesuffix("_id") if name.endswith("_id") else name] = getattr(row, name, None)
    return {
        "event": f"{kind}.{status}",
        "project": project.slug,
        "created": now().isoformat(),
        "object": obj,
    }


def queue_deliveries(model: type[QueuedWork], pk: int, status: str) -> list[WebhookDelivery]:
    """One delivery per active webhook of the row's project that hears of its kind, each queued."""
    kind = KINDS[model]
    rows: QuerySet[Any] = model._default_manager.all()
    row = rows.select_related("project").filter(pk=pk).first()
    if row is None:
        return []
    body = payload(row, kind, status)
    project = body["project"]
    deliveries = []
    hooks = Webhook.objects.filter(project__slug=project, active=True).order_by("pk")
    for hook in hooks:
        if kind not in hook.events:
            continue
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(
                webhook=hook,
                project_id=hook.project_id,
                event=body["event"],
                payload=body,
                created_by_id=hook.created_by_id,
            )
            queue.enqueue(delivery)
        deliveries.append(delivery)
    return deliveries
