"""An evaluation on a worker: every candidate answers the same rows at once
(jobs.engine.evaluate.evaluate_candidates), each answer stored as it completes.

Finished rows are skipped (a retry resumes); a cancel stops after the rows in flight. A candidate
that cannot run at all (its model is gone, a key is missing) records why, and the others still
run; when none could, the evaluation fails with their reasons. The verdict is written with the
end (jobs/services/comparisons.py reads the results).
"""

from __future__ import annotations

import logging
from typing import Any

from django.utils.timezone import now

from jobs.models import Evaluation, EvaluationCandidate, EvaluationResult, Status
from jobs.services import comparisons, errors, evaluations, model_policy
from jobs.work.base import Ending, RowWork

logger = logging.getLogger(__name__)


class EvaluationWork(RowWork[Evaluation]):
    queryset = Evaluation.objects.select_related("project", "program_version", "trainset", "run")
    candidates: dict[str, EvaluationCandidate]  # by primary key, as the engine names them

    def run(self) -> Ending:
        from jobs.engine.evaluate import Candidate, evaluate_candidates, price_per_token

        evaluation = self.row
        self.candidates = {
            str(c.pk): c
            for c in evaluation.candidates.select_related("language_model").order_by("position")
        }
        ready: list[Candidate] = []
        for key, candidate in self.candidates.items():
            try:
                model_policy.check_model(candidate.language_model)
                spec = candidate.language_model.to_spec()
                spec = type(spec)(**{**spec.to_dict(), "temperature": candidate.temperature})
                price_in, price_out = price_per_token(spec)
            except Exception as exc:
                self.cannot_run(key, exc)
                continue
            EvaluationCandidate.objects.filter(pk=key).update(
                input_cost_per_token=price_in, output_cost_per_token=price_out, error=""
            )
            ready.append(Candidate(key, spec, candidate.demos))
        evaluate_candidates(
            program=evaluation.program_version.to_spec(),
            candidates=ready,
            rows=evaluations.evaluation_rows(evaluation),
            metric=evaluation.metric_spec(),
            threads=evaluation.num_threads,
            skip={
                key: set(c.results.values_list("row_index", flat=True))
                for key, c in self.candidates.items()
            },
            on_result=self.on_result,
            on_error=self.cannot_run,
            should_stop=evaluation.stop_requested,
        )
        if evaluation.stop_requested():
            return Ending(Status.CANCELLED)
        failed = list(
            evaluation.candidates.exclude(error="")
            .select_related("language_model")
            .values_list("language_model__name", "error")
        )
        verdict = comparisons.compare(evaluation).verdict()
        if failed and len(failed) == len(self.candidates):
            message = "; ".join(f"{name}: {error}" for name, error in failed)
            return Ending(Status.FAILED, error=message, changes={"verdict": verdict})
        return Ending(Status.SUCCEEDED, changes={"verdict": verdict})

    def cannot_run(self, key: str, exc: Exception) -> None:
        """This candidate only: the comparison says why."""
        logger.warning("evaluation %s: candidate %s cannot run: %s", self.row.pk, key, exc)
        EvaluationCandidate.objects.filter(pk=key).update(error=errors.describe(exc))

    def on_result(self, key: str, result: dict[str, Any]) -> None:
        """Each answer is stored at once; the evaluation's counter follows, throttled."""
        values = {k: result[k] for k in comparisons.RESULT_FIELDS}
        if values["error"]:
            values["error"] = errors.public_text(values["error"])
        EvaluationResult.objects.bulk_create(
            [EvaluationResult(candidate=self.candidates[key], **values)], ignore_conflicts=True
        )
        self.progressed(self.flush)

    def flush(self) -> None:
        done = EvaluationResult.objects.filter(candidate__evaluation=self.row).count()
        Evaluation.objects.filter(pk=self.row.pk).update(done=done, updated=now())
