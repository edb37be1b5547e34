"""RQ entry points: load the row by primary key, call its service, nothing else.

Tasks take primary keys (RQ stores them as JSON), never instances. The engine (DSPy, torch) is
imported inside the services' worker functions, so a worker's parent process never imports
torch before it forks a work horse (see jobs/worker.py).
"""

from __future__ import annotations

from typing import Any

from jobs.models import (
    Evaluation,
    LanguageModel,
    PlaygroundTry,
    WebhookDelivery,
)
from jobs.services import (
    errors,
    evaluations,
    language_models,
    playground,
    queue,
    webhooks,
)
from jobs.work.finetunes import FinetuneWork
from jobs.work.runs import BootstrapWork
from jobs.work.trainsets import ImportWork


def run_bootstrap(run_pk: int) -> str:
    return BootstrapWork.handle(run_pk)


def run_finetune(job_pk: int) -> str:
    return FinetuneWork.handle(job_pk)


def run_evaluation(evaluation_pk: int) -> str:
    evaluation = Evaluation.objects.select_related(
        "project", "program_version", "trainset", "run"
    ).get(pk=evaluation_pk)
    return evaluations.run_evaluation(evaluation)


def run_playground_try(try_pk: int) -> str:
    attempt = PlaygroundTry.objects.select_related("project", "program_version").get(pk=try_pk)
    return playground.run_try(attempt)


def run_trainset_import(import_pk: int) -> str:
    return ImportWork.handle(import_pk)


def run_model_test(model_pk: int, prompt: str = language_models.MODEL_TEST_PROMPT) -> str:
    model = LanguageModel.objects.select_related("project").get(pk=model_pk)
    return language_models.run_model_test(model, prompt)


def run_webhook_delivery(delivery_pk: int) -> str:
    delivery = WebhookDelivery.objects.select_related("webhook").filter(pk=delivery_pk).first()
    return "skipped" if delivery is None else webhooks.run_delivery(delivery)


def on_work_failure(
    rq_job: Any, connection: Any, exc_type: type[BaseException], exc: BaseException, tb: Any
) -> None:
    """Timeouts, abandoned jobs and exceptions a task could not record (rq passes these positionally)."""
    queue.fail_from_callback(str(rq_job.id), errors.failure_reason(exc_type, exc))


def on_model_test_failure(
    rq_job: Any, connection: Any, exc_type: type[BaseException], exc: BaseException, tb: Any
) -> None:
    language_models.record_test_error(rq_job.args[0], errors.failure_reason(exc_type, exc))
