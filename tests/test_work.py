"""The worker wing's one lifecycle (jobs/work/base.py): every kind claims, records a failure and
ends the same way, and writes progress through one throttle. The kinds' own work is tested with
the real engine in tests/test_tasks.py, test_evaluations.py, test_playground.py and the others."""

from __future__ import annotations

from django.test import override_settings

from jobs import tasks
from jobs.models import PlaygroundTry, Status, Trainset, TrainsetImport
from jobs.work.base import Ending, RowWork, Throttle, WorkFailed
from tests.base import BaseTestCase


class LifecycleTestCase(BaseTestCase):
    def make_import(self, path: str) -> TrainsetImport:
        trainset = Trainset.objects.create(
            project=self.p1, name="big", status=Trainset.Status.IMPORTING, created_by=self.bob
        )
        return TrainsetImport.objects.create(trainset=trainset, path=path, created_by=self.bob)

    def test_a_failed_import_records_the_reason_without_paths_like_every_kind(self) -> None:
        gone = self.artifacts / "uploads" / "gone.jsonl"
        work = self.make_import(str(gone))
        with self.assertRaises(FileNotFoundError):
            tasks.run_trainset_import(work.pk)
        work.refresh_from_db()
        self.assertEqual(work.status, Status.FAILED)
        self.assertIn("FileNotFoundError", work.error)
        self.assertIn("gone.jsonl", work.error)
        self.assertNotIn(str(self.artifacts), work.error)  # errors.describe strips paths
        trainset = Trainset.objects.get(pk=work.trainset_id)
        self.assertEqual((trainset.status, trainset.error), ("failed", work.error))

    def test_a_playground_try_that_cannot_run_ends_failed_with_the_reason(self) -> None:
        version = self.make_program({"name": "broken", "modules": []})  # no module: invalid
        attempt = PlaygroundTry.objects.create(
            project=self.p1,
            program_version=version,
            chosen=[{"pk": self.make_model().pk, "name": "smollm2"}],
            inputs={"text": "hi"},
            created_by=self.bob,
        )
        with self.assertRaises(ValueError):
            tasks.run_playground_try(attempt.pk)
        attempt.refresh_from_db()
        self.assertEqual(attempt.status, Status.FAILED)
        self.assertTrue(attempt.error)
        self.assertIsNotNone(attempt.finished)

    def test_a_row_that_is_not_queued_or_not_there_is_skipped(self) -> None:
        work = self.make_import(str(self.artifacts / "x.jsonl"))
        work.cancel_if_queued()
        self.assertEqual(tasks.run_trainset_import(work.pk), "skipped")
        self.assertEqual(tasks.run_trainset_import(work.pk + 100), "skipped")
        self.assertEqual(tasks.run_playground_try(12345), "skipped")

    def test_work_failed_ends_the_row_failed_as_an_outcome(self) -> None:
        class Refusing(RowWork[TrainsetImport]):
            queryset = TrainsetImport.objects.all()
            flushed = 0

            def run(self) -> Ending:
                raise WorkFailed("the file is refused", result="refused")

            def flush(self) -> None:
                self.flushed += 1

        work = Refusing(self.make_import(str(self.artifacts / "x.jsonl")))
        self.assertEqual(work.perform(), "refused")  # nothing raised
        self.assertEqual(work.flushed, 1)  # the last progress first
        work.row.refresh_from_db()
        self.assertEqual((work.row.status, work.row.error), ("failed", "the file is refused"))

    def test_an_end_the_row_no_longer_takes_is_superseded_and_commits_nothing(self) -> None:
        committed = []

        class Raced(RowWork[TrainsetImport]):
            queryset = TrainsetImport.objects.all()

            def run(self) -> Ending:
                self.row.mark_finished(Status.FAILED, error="reconciled meanwhile")
                return Ending(Status.SUCCEEDED, commit=lambda: committed.append(1))

        work = Raced(self.make_import(str(self.artifacts / "x.jsonl")))
        self.assertEqual(work.perform(), "superseded")
        self.assertEqual(committed, [])
        work.row.refresh_from_db()
        self.assertEqual((work.row.status, work.row.error), ("failed", "reconciled meanwhile"))


class ThrottleTestCase(BaseTestCase):
    @override_settings(BFT_PROGRESS_EVERY_S=3600)
    def test_it_lets_the_first_write_through_then_one_per_interval_unless_forced(self) -> None:
        throttle = Throttle()
        self.assertEqual(throttle.every_s, 3600)
        self.assertTrue(throttle.due())
        self.assertFalse(throttle.due())
        self.assertTrue(throttle.due(force=True))
        self.assertFalse(throttle.due())
        every_time = Throttle(0)
        self.assertTrue(every_time.due() and every_time.due())
