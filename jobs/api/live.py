"""What the run and fine-tune resources share: the queue's view of a row, cancel and retry.

As on the live pages, a detail request reconciles a row whose heartbeat is stale and finds a
queued row's place (``queue.queue_info``); Redis is not asked about a healthy running row."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from jobs.api.errors import Conflict, ErrorSerializer
from jobs.models import QueuedWork
from jobs.services import queue


class QueueSerializer(serializers.Serializer):
    available = serializers.BooleanField(help_text="False when Redis did not answer.")
    position = serializers.IntegerField(
        allow_null=True, help_text="A queued row's place in its queue (1: next)."
    )
    waiting = serializers.IntegerField(allow_null=True, help_text="Jobs waiting in its queue.")


def queue_state(row: QueuedWork) -> dict[str, Any]:
    info = queue.queue_info(row)
    return {"available": info.available, "position": info.position, "waiting": info.waiting}


def act(view: Any, request: Request, how: Any, detail: type[serializers.Serializer]) -> Response:
    """Run ``how(row=..., user=...)`` (queue.cancel, queue.retry, ...) on the view's object; a
    refusal (ValueError) is a 409 saying why. Answers the row as it is now."""
    row = view.get_object()
    try:
        how(row=row, user=request.user)
    except ValueError as e:  # its state refuses it: say why
        raise Conflict(str(e)) from e
    return Response(detail(row, context=view.get_serializer_context()).data)


def queued_actions(detail: type[serializers.Serializer], noun: str) -> type:
    """A mixin with ``cancel`` and ``retry`` for a viewset of queued rows; each answers ``detail``."""

    refused = OpenApiResponse(ErrorSerializer, f"The {noun}'s state refuses it.")

    class Actions:
        @extend_schema(
            summary=f"Cancel the {noun} (queued: at once; running: at its next check)",
            request=None,
            responses={200: detail, 409: refused},
        )
        @action(detail=True, methods=["post"])
        def cancel(self, request: Request, *args: Any, **kwargs: Any) -> Response:
            return act(self, request, queue.cancel, detail)

        @extend_schema(
            summary=f"Retry a failed or cancelled {noun} (it resumes where it stopped)",
            request=None,
            responses={200: detail, 409: refused},
        )
        @action(detail=True, methods=["post"])
        def retry(self, request: Request, *args: Any, **kwargs: Any) -> Response:
            return act(self, request, queue.retry, detail)

    return Actions
