"""A model test on a worker (the Models page's Test button): the prompt goes to the model and its
answer, or why there is none, is stored on the model's row. A call, not a queued row: there is no
state to claim, and an error is the test's answer, so it is recorded and not raised."""

from __future__ import annotations

from typing import Any

from django.utils.timezone import now

from jobs.models import LanguageModel, Status
from jobs.services import errors, model_policy
from jobs.services.language_models import MODEL_TEST_PROMPT
from jobs.work.base import Ending, Work, WorkFailed

TEST_OUTPUT_MAX_CHARS = 2000


def record_test_error(model_pk: int, error: str) -> None:
    LanguageModel.objects.filter(pk=model_pk).update(
        last_test_output="", last_test_error=error, last_test_at=now()
    )


class ModelTestWork(Work[LanguageModel]):
    def __init__(self, row: LanguageModel, *, prompt: str = MODEL_TEST_PROMPT) -> None:
        super().__init__(row)
        self.prompt = prompt

    @classmethod
    def load(cls, pk: int) -> LanguageModel | None:
        return LanguageModel.objects.select_related("project").filter(pk=pk).first()

    def claim(self) -> bool:
        LanguageModel.objects.filter(pk=self.row.pk).update(last_test_prompt=self.prompt)
        return True

    def run(self) -> Ending:
        from jobs.engine.local_lm import try_model

        try:
            model_policy.check_model(self.row)
            output = try_model(self.row.to_spec(), self.prompt)
        except Exception as exc:  # the model's answer to the test: shown on the Models page
            raise WorkFailed(errors.describe(exc), result="error") from exc
        return Ending(
            Status.SUCCEEDED,
            result="ok",
            changes={"last_test_output": output[:TEST_OUTPUT_MAX_CHARS], "last_test_error": ""},
        )

    def end(self, ending: Ending) -> bool:
        changes: dict[str, Any] = {**ending.changes, "last_test_at": now()}
        LanguageModel.objects.filter(pk=self.row.pk).update(**changes)
        return True

    def end_failed(self, reason: str) -> None:
        record_test_error(self.row.pk, reason)
