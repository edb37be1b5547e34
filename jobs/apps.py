from __future__ import annotations

from django.apps import AppConfig


class JobsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "jobs"
    verbose_name = "Distillation"

    def ready(self) -> None:
        from django.conf import settings

        from jobs.engine import model_store

        # The engine has no Django: hand it the directories the web app and the workers agree on.
        model_store.configure(
            artifacts_dir=settings.BFT_ARTIFACTS_DIR, model_cache_dir=settings.BFT_MODEL_CACHE_DIR
        )
        from jobs.models.queued_work import work_ended
        from jobs.services import webhooks

        # A run, fine-tune or evaluation that ends tells the project's webhooks (on commit).
        work_ended.connect(webhooks.on_work_ended, dispatch_uid="jobs.webhooks")
