"""/api/v1/: every resource lives under its project, /api/v1/projects/<slug>/..., as the pages do
under /p/<slug>/. The schema is /api/v1/schema/ (OpenAPI 3), its docs page /api/v1/docs/."""

from __future__ import annotations

from typing import Any

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny
from rest_framework.routers import SimpleRouter

from jobs.api import (
    evaluations,
    finetunes,
    language_models,
    programs,
    projects,
    review,
    runs,
    trainsets,
    webhooks,
)

app_name = "api"

P = "projects/<slug:slug>"
RUN = f"{P}/runs/<int:run_pk>"

router = SimpleRouter(use_regex_path=False)
router.register("projects", projects.ProjectsViewSet, basename="project")
router.register(f"{P}/trainsets", trainsets.TrainsetViewSet, basename="trainset")
router.register(f"{P}/programs", programs.ProgramViewSet, basename="program")
router.register(f"{P}/models", language_models.LanguageModelViewSet, basename="model")
router.register(f"{P}/runs", runs.RunViewSet, basename="run")
router.register(f"{RUN}/traces", review.TraceViewSet, basename="trace")
router.register(f"{RUN}/trace-sets", review.TraceSetViewSet, basename="trace-set")
router.register(f"{P}/finetunes", finetunes.FinetuneViewSet, basename="finetune")
router.register(f"{P}/evaluations", evaluations.EvaluationViewSet, basename="evaluation")
router.register(f"{P}/webhooks", webhooks.WebhookViewSet, basename="webhook")
router.register(
    f"{P}/webhooks/<int:webhook_pk>/deliveries", webhooks.DeliveryViewSet, basename="delivery"
)

# The schema and its docs page are public: they describe the API, they hold no project's data.
PUBLIC: dict[str, Any] = {"permission_classes": [AllowAny]}

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(**PUBLIC), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema", **PUBLIC), name="docs"),
    *router.urls,
]
