"""A webhook delivery on a worker: POST the signed payload until a 2xx answer or the last try,
waiting BFT_WEBHOOK_BACKOFF_S, then twice that, ... between tries; every try is a WebhookAttempt.
The URL is checked against the allow-list again before each try (it may have changed), and
redirects are not followed. What is sent and how it is signed: jobs/services/webhooks.py."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from django.conf import settings
from django.utils.timezone import now

from jobs.models import Status, WebhookAttempt, WebhookDelivery
from jobs.services import errors, webhooks
from jobs.work.base import Ending, RowWork

RESPONSE_MAX_CHARS = 300


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


class DeliveryWork(RowWork[WebhookDelivery]):
    queryset = WebhookDelivery.objects.select_related("webhook")

    def run(self) -> Ending:
        delivery = self.row
        hook = delivery.webhook
        body = json.dumps(delivery.payload, sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": webhooks.USER_AGENT,
            webhooks.EVENT_HEADER: delivery.event,
            webhooks.DELIVERY_HEADER: str(delivery.pk),
            webhooks.SIGNATURE_HEADER: webhooks.signature(hook.secret, body),
        }
        tries = max(1, int(settings.BFT_WEBHOOK_ATTEMPTS))
        last_error = ""
        for i in range(tries):
            if i:
                time.sleep(backoff_s(i))
                if delivery.stop_requested():
                    return Ending(
                        Status.CANCELLED, result="cancelled", error="Cancelled between tries."
                    )
            if problem := webhooks.url_problem(hook.url):  # the allow-list may have changed since
                self.record_try(None, problem, 0)
                return Ending(Status.FAILED, result="refused", error=problem)
            started = time.monotonic()
            status, error = post(hook.url, body, headers)
            self.record_try(status, error, round(1000 * (time.monotonic() - started)))
            if status is not None and 200 <= status < 300:
                return Ending(Status.SUCCEEDED, result="delivered")
            last_error = error or f"HTTP {status}"
        return Ending(
            Status.FAILED,
            result="failed",
            error=f"No 2xx answer after {tries} tries; the last: {last_error}",
        )

    def record_try(self, status: int | None, error: str, duration_ms: int) -> None:
        """One try's row, and the delivery's count and last status (its heartbeat, too)."""
        delivery = self.row
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
