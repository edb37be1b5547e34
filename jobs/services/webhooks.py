"""Webhooks: tell a project's URLs, with a signed JSON POST, when a run, fine-tune or evaluation ends.

- Registration: the URL must match a host or URL prefix in the BFT_WEBHOOK_HOSTS setting (the
  operator's allow-list, the same rule as a model's api_base and BFT_LM_API_BASES), checked again
  before every try. Redirects are not followed.
- The seam: every queued row's transition to succeeded, failed or cancelled sends
  ``jobs.models.queued_work.work_ended``; :func:`on_work_ended` (connected in JobsConfig.ready)
  queues one WebhookDelivery per subscribed webhook once the transition commits.
- Delivery: a WebhookDelivery is queued work (jobs/services/queue.py, queue "default"). Its task
  POSTs the payload, waiting BFT_WEBHOOK_BACKOFF_S, then twice that, ... between tries, up to
  BFT_WEBHOOK_ATTEMPTS tries; a 2xx answer ends it. Every try is a WebhookAttempt row. A failed
  delivery can be retried like any queued row (the API's redeliver).
- Signature: ``X-Bftweb-Signature: sha256=<hex>``, the HMAC-SHA256 of the exact body with the
  webhook's secret (:func:`signature`); ``X-Bftweb-Event`` and ``X-Bftweb-Delivery`` name the
  event and the delivery (the same on every try, so receivers can drop repeats).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils.timezone import now

from jobs.models import (
    BootstrapRun,
    Evaluation,
    FinetuneJob,
    Project,
    QueuedWork,
    Status,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
)
from jobs.services import errors, queue
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
RESPONSE_MAX_CHARS = 300


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


# --- delivery (the worker's part) ---------------------------------------------------------------


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect answers the try (as a failure): it could lead anywhere, past the allow-list."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str]:
    """POST ``body``: (the answer's status, "") or (status or None, why it is not a success)."""
    opener = urllib.request.build_opener(_NoRedirects)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with opener.open(request, timeout=settings.BFT_WEBHOOK_TIMEOUT_S) as response:
            return int(response.status), ""
    except urllib.error.HTTPError as exc:
        text = exc.read(RESPONSE_MAX_CHARS).decode("utf-8", "replace").strip()
        return exc.code, errors.public_text(f"HTTP {exc.code}" + (f": {text}" if text else ""))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return None, errors.public_text(f"{type(reason).__name__}: {reason}")


def backoff_s(tries_done: int) -> float:
    """How long to wait after the ``tries_done``-th failed try: the base, then doubling."""
    return float(settings.BFT_WEBHOOK_BACKOFF_S) * 2 ** (tries_done - 1)


def run_delivery(delivery: WebhookDelivery) -> str:
    """POST the delivery's payload until a 2xx answer or the last try; record every try."""
    if not delivery.mark_running():
        return "skipped"
    hook = delivery.webhook
    body = json.dumps(delivery.payload, sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_HEADER: delivery.event,
        DELIVERY_HEADER: str(delivery.pk),
        SIGNATURE_HEADER: signature(hook.secret, body),
    }
    tries = max(1, int(settings.BFT_WEBHOOK_ATTEMPTS))
    last_error = ""
    for i in range(tries):
        if i:
            time.sleep(backoff_s(i))
            if delivery.stop_requested():
                delivery.mark_finished(Status.CANCELLED, error="Cancelled between tries.")
                return "cancelled"
        if problem := url_problem(hook.url):  # the allow-list may have changed since
            _record(delivery, None, problem, 0)
            delivery.mark_finished(Status.FAILED, error=problem)
            return "refused"
        started = time.monotonic()
        status, error = post(hook.url, body, headers)
        _record(delivery, status, error, round(1000 * (time.monotonic() - started)))
        if status is not None and 200 <= status < 300:
            delivery.mark_finished(Status.SUCCEEDED)
            return "delivered"
        last_error = error or f"HTTP {status}"
    delivery.mark_finished(
        Status.FAILED, error=f"No 2xx answer after {tries} tries; the last: {last_error}"
    )
    return "failed"


def _record(delivery: WebhookDelivery, status: int | None, error: str, duration_ms: int) -> None:
    """One try's row, and the delivery's count and last status (its heartbeat, too)."""
    delivery.attempts += 1
    delivery.response_status = status
    WebhookAttempt.objects.create(
        delivery=delivery,
        number=delivery.attempts,
        response_status=status,
        error=error,
        duration_ms=duration_ms,
    )
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        attempts=delivery.attempts, response_status=status, updated=now()
    )
