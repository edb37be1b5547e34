"""Models: try a registered model on a worker (the Models page's Test button; the worker's part is
jobs/work/model_tests.py).

What a project may register at all is jobs/services/model_policy.py.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from django.conf import settings

from jobs.models import LanguageModel
from jobs.services import model_policy, queue

if TYPE_CHECKING:
    from django.contrib.auth.models import User

MODEL_TEST_QUEUE = "default"
MODEL_TEST_PROMPT = "Reply with one short sentence: what is knowledge distillation?"
MAX_PROMPT_CHARS = 4000


def enqueue_model_test(
    *, model: LanguageModel, user: User | None = None, prompt: str = MODEL_TEST_PROMPT
) -> str:
    """Send ``prompt`` (the user's, else a fixed one) to the model on a worker; the task stores
    the answer or the error. ValueError for an empty or overlong prompt.

    ModelPolicyError when the installation does not allow the model; QueueUnavailable when Redis
    does not answer. Pages tell a pending test by ``last_test_at`` older than the request.
    """
    prompt = prompt.strip()
    if not prompt:
        raise ValueError("Type a prompt for the model.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"The prompt is longer than {MAX_PROMPT_CHARS:,} characters.")
    model_policy.check_model(model)
    rq_job_id = f"model-test-{model.pk}-{int(time.time() * 1000)}"
    queue.enqueue_call(
        MODEL_TEST_QUEUE,
        "jobs.tasks.run_model_test",
        model.pk,
        prompt,
        job_id=rq_job_id,
        timeout_s=settings.BFT_MODEL_TEST_TIMEOUT_S,
        on_failure="jobs.tasks.on_model_test_failure",
        description=f"test model {model.name}",
    )
    return rq_job_id
