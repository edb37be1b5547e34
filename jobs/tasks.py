"""RQ entry points, a line each: the worker wing (jobs/work/) loads the row by primary key and
runs its one lifecycle, claim → run → record → end.

Tasks take primary keys (RQ stores them as JSON), never instances. The engine (DSPy, torch) is
imported inside the wing's ``run`` bodies, so a worker's parent process, which imports this
module, never imports torch before it forks a work horse (see jobs/worker.py).
"""

from __future__ import annotations

from typing import Any

from jobs.services import errors, queue
from jobs.services.language_models import MODEL_TEST_PROMPT
from jobs.work.evaluations import EvaluationWork
from jobs.work.finetunes import FinetuneWork
from jobs.work.model_tests import ModelTestWork, record_test_error
from jobs.work.playground import TryWork
from jobs.work.runs import BootstrapWork
from jobs.work.trainsets import ImportWork
from jobs.work.webhooks import DeliveryWork


def run_bootstrap(run_pk: int) -> str:
    return BootstrapWork.handle(run_pk)


def run_finetune(job_pk: int) -> str:
    return FinetuneWork.handle(job_pk)


def run_evaluation(evaluation_pk: int) -> str:
    return EvaluationWork.handle(evaluation_pk)


def run_playground_try(try_pk: int) -> str:
    return TryWork.handle(try_pk)


def run_trainset_import(import_pk: int) -> str:
    return ImportWork.handle(import_pk)


def run_model_test(model_pk: int, prompt: str = MODEL_TEST_PROMPT) -> str:
    return ModelTestWork.handle(model_pk, prompt=prompt)


def run_webhook_delivery(delivery_pk: int) -> str:
    return DeliveryWork.handle(delivery_pk)


def on_work_failure(
    rq_job: Any, connection: Any, exc_type: type[BaseException], exc: BaseException, tb: Any
) -> None:
    """Timeouts, abandoned jobs and exceptions a task could not record (rq passes these positionally)."""
    queue.fail_from_callback(str(rq_job.id), errors.failure_reason(exc_type, exc))


def on_model_test_failure(
    rq_job: Any, connection: Any, exc_type: type[BaseException], exc: BaseException, tb: Any
) -> None:
    record_test_error(rq_job.args[0], errors.failure_reason(exc_type, exc))
