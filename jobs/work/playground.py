"""A playground try on a worker: each chosen model answers the one input in turn, each answer
stored as it comes. A model that cannot answer (deleted, refused, its call failed) records why in
its own result and the others still answer; a failure of the try itself ends it failed, as any
work does."""

from __future__ import annotations

import time
from typing import Any

from jobs.models import LanguageModel, PlaygroundTry, Status
from jobs.services import errors, model_policy
from jobs.work.base import Ending, RowWork

RESULT_KEYS = ("outputs", "reasoning", "raw", "error", "latency_s", "tokens_in", "tokens_out")


class TryWork(RowWork[PlaygroundTry]):
    queryset = PlaygroundTry.objects.select_related("project", "program_version")

    def run(self) -> Ending:
        from jobs.engine.evaluate import answer
        from jobs.engine.types import MetricSpec

        attempt = self.row
        spec = attempt.program_version.to_spec()
        labelled = [name for name in reversed(spec.output_fields) if name in attempt.labels]
        metric = MetricSpec("normalized_match", labelled[0]) if labelled else None
        results: list[dict[str, Any]] = []
        for chosen in attempt.chosen:
            if attempt.stop_requested():
                break
            started = time.monotonic()
            model = LanguageModel.objects.filter(pk=chosen["pk"], project=attempt.project).first()
            try:
                if model is None:
                    raise ValueError("the model was deleted")
                model_policy.check_model(model)
                result = answer(
                    program=spec,
                    model=model.to_spec(),
                    inputs=attempt.inputs,
                    labels=attempt.labels,
                    metric=metric,
                )
                record = {key: result[key] for key in RESULT_KEYS} | {"passed": result["passed"]}
                if record["error"]:
                    record["error"] = errors.public_text(record["error"])
            except Exception as exc:  # this model's answer: the others still answer
                record = {
                    "error": errors.describe(exc),
                    "latency_s": round(time.monotonic() - started, 3),
                }
            results.append({"model": chosen["pk"], "name": chosen["name"], **record})
            PlaygroundTry.objects.filter(pk=attempt.pk).update(results=results)
        status = Status.CANCELLED if attempt.stop_requested() else Status.SUCCEEDED
        return Ending(status, changes={"results": results})
