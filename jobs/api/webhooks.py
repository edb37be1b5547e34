"""/api/v1/projects/<slug>/webhooks/: register a URL (allow-listed hosts only) told with a signed
JSON POST when a run, fine-tune or evaluation ends; list, detail, delete; each webhook's
deliveries with every try, and redeliver. Rules: jobs/services/webhooks.py."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers
from rest_framework.request import Request
from rest_framework.response import Response

from jobs.api.base import ProjectViewSet
from jobs.api.errors import ErrorSerializer, invalid
from jobs.api.live import queued_actions
from jobs.models import Project, Webhook, WebhookAttempt, WebhookDelivery
from jobs.services import webhooks


class WebhookSerializer(serializers.ModelSerializer):
    secret = serializers.SerializerMethodField(
        help_text="Signs each body (X-Bftweb-Signature: sha256=HMAC-SHA256(secret, body)). "
        "Shown to operators and owners (and read-write keys) only."
    )

    class Meta:
        model = Webhook
        fields = ["id", "url", "events", "active", "secret", "created"]
        read_only_fields = fields

    def get_secret(self, webhook: Webhook) -> str | None:
        return webhook.secret if self.context.get("can_operate") else None


class WebhookCreateSerializer(serializers.Serializer):
    url = serializers.CharField(
        max_length=500, help_text="Its host must be allowed by the BFT_WEBHOOK_HOSTS setting."
    )
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=Webhook.Event.values),
        required=False,
        help_text="The kinds of work whose end it hears of (default: all).",
    )


class AttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookAttempt
        fields = ["number", "created", "response_status", "error", "duration_ms"]
        read_only_fields = fields


class DeliverySerializer(serializers.ModelSerializer):
    webhook = serializers.IntegerField(source="webhook_id", read_only=True)
    tries = AttemptSerializer(source="attempt_rows", many=True, read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "webhook",
            "event",
            "status",
            "attempts",
            "response_status",
            "error",
            "payload",
            "tries",
            "created",
            "finished",
        ]
        read_only_fields = fields


class OperatorContext:
    def get_serializer_context(self) -> dict[str, Any]:
        access = getattr(self, "access", None)
        context: dict[str, Any] = super().get_serializer_context()  # type: ignore[misc]
        return {**context, "can_operate": bool(access and access.can_operate)}


class WebhookViewSet(
    OperatorContext,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    ProjectViewSet,
):
    queryset = Webhook.objects.all()
    serializer_class = WebhookSerializer

    def project_queryset(self, project: Project) -> QuerySet[Webhook]:
        return Webhook.objects.filter(project=project)

    @extend_schema(
        summary="Register a webhook",
        request=WebhookCreateSerializer,
        responses={
            201: WebhookSerializer,
            400: OpenApiResponse(ErrorSerializer, "Not an allowed URL, or unknown events."),
        },
    )
    def create(self, request: Request, slug: str) -> Response:
        typed = WebhookCreateSerializer(data=request.data)
        typed.is_valid(raise_exception=True)
        events = typed.validated_data.get("events")
        try:
            webhook = webhooks.create_webhook(
                project=self.project,
                user=request.user,
                url=typed.validated_data["url"],
                events=events,
            )
        except webhooks.WebhookRefused as e:
            field = "events" if str(e).startswith("Choose events") else "url"
            raise invalid(field, str(e), code="refused") from e
        return Response(self.get_serializer(webhook).data, status=201)

    def perform_destroy(self, instance: Webhook) -> None:
        webhooks.delete_webhook(webhook=instance, user=self.request.user)


class DeliveryViewSet(
    queued_actions(DeliverySerializer, "delivery"),  # type: ignore[misc]
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    ProjectViewSet,
):
    """A webhook's deliveries, newest first, each with its tries. ``retry`` sends a failed one again."""

    queryset = WebhookDelivery.objects.all()
    serializer_class = DeliverySerializer

    def project_queryset(self, project: Project) -> QuerySet[WebhookDelivery]:
        webhook = get_object_or_404(Webhook, pk=self.kwargs["webhook_pk"], project=project)
        return webhook.deliveries.prefetch_related("attempt_rows")
