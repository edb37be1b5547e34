"""A large upload imported on a worker (a TrainsetImport row): validate the stored file, then
write its rows and end the import in one transaction. The steps are the request's own
(jobs/services/trainsets.py); progress ({phase, done, total}) goes to the RQ job's meta."""

from __future__ import annotations

import os

from jobs.engine.trainsets import TrainsetReport
from jobs.models import Status, Trainset, TrainsetImport
from jobs.services import queue, trainsets
from jobs.work.base import Ending, RowWork, WorkFailed


class ImportWork(RowWork[TrainsetImport]):
    queryset = TrainsetImport.objects.select_related("trainset")

    def run(self) -> Ending:
        work = self.row
        trainset, path = work.trainset, work.path
        total_bytes = os.path.getsize(path)
        report = trainsets.validate(
            path, trainset.fmt, on_read=lambda n: self.report("validating", n, total_bytes)
        )
        outcome = trainsets.outcome_from_report(report)
        if trainsets.refused(outcome, work.skip_bad_rows):
            summary = trainsets.skipped_summary(outcome)
            raise WorkFailed(summary.replace("skipped", "found; nothing was imported", 1))
        self.report("writing", 0, report.valid_count, force=True)
        return Ending(Status.SUCCEEDED, result="ready", commit=lambda: self.write(report, outcome))

    def write(self, report: TrainsetReport, outcome: trainsets.ImportOutcome) -> None:
        """The rows, and the trainset ready: in the transaction that ends the import."""
        trainset = self.row.trainset
        try:
            trainsets.write_rows(
                trainset,
                self.row.path,
                valid_count=report.valid_count,
                on_written=lambda n: self.report("writing", n, report.valid_count),
            )
        except trainsets.ImportAborted as e:
            raise WorkFailed(
                "The file failed; nothing was imported:\n" + "\n".join(map(str, e.errors))
            ) from e
        trainset.row_count = report.valid_count
        Trainset.objects.filter(pk=trainset.pk).update(
            status=Trainset.Status.READY,
            row_count=report.valid_count,
            fields=trainsets.field_stats(report),
            error=trainsets.skipped_summary(outcome) if report.error_count else "",
        )

    def ended(self, ending: Ending) -> None:
        rows = self.row.trainset.row_count
        self.report("done", rows, rows, force=True)

    def report(self, phase: str, done: int, total: int, *, force: bool = False) -> None:
        self.progressed(
            lambda: queue.save_job_progress({"phase": phase, "done": done, "total": total}),
            force=force,
        )
