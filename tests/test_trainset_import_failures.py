"""Background trainset imports that fail or are lost: an unstorable value found on the worker, a
queue that is down at upload, an import the queue lost (reconcile ends it), and a stuck import an
operator marks failed in the admin. The real upload view, the real Redis and a real RQ worker."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.test import override_settings
from django.utils.timezone import now
from rq import SimpleWorker

from jobs.devtools import free_port
from jobs.models import Trainset, TrainsetImport, TrainsetRow
from jobs.services import queue
from tests.base import WorkerTestCase
from tests.test_trainset_values import GOOD, URL, no_unstorable, upload
from tests.web import WebTestCase


def run_worker() -> None:
    rq_queue = queue.get_queue("default")
    SimpleWorker([rq_queue], connection=rq_queue.connection, serializer=rq_queue.serializer).work(
        burst=True
    )


@override_settings(BFT_TRAINSET_ASYNC_ROWS=5)
class BackgroundImportTestCase(WebTestCase):
    """The same checks on a worker, and the import as a row that reconcile covers."""

    def post(self, content: bytes, **fields: object):
        self.client.force_login(self.bob)
        with self.captureOnCommitCallbacks(execute=True):
            return self.client.post(URL, upload("big.jsonl", content, **fields))

    def uploads(self) -> list[object]:
        return list((self.artifacts / "uploads").iterdir())

    def test_an_unstorable_value_fails_the_import_on_the_worker_and_writes_nothing(self) -> None:
        lines = [GOOD] * 8 + ['{"text": "a\\u0000b", "sentiment": "x"}']
        self.post("\n".join(lines).encode())
        work = TrainsetImport.objects.get()
        self.assertEqual(work.status, "queued")
        run_worker()
        work.refresh_from_db()
        trainset = work.trainset
        trainset.refresh_from_db()
        self.assertEqual((work.status, trainset.status), ("failed", "failed"))
        self.assertIn("line 9", trainset.error)
        self.assertIn("NUL character", trainset.error)
        self.assertTrue(no_unstorable(trainset.error))
        self.assertFalse(TrainsetRow.objects.exists())
        self.assertEqual(self.uploads(), [])
        self.assertContains(self.client.get(f"/p/p1/trainsets/{trainset.pk}/"), "line 9")

    def test_the_import_row_succeeds_with_the_rows_and_their_places(self) -> None:
        self.post(("\n" + "\n".join([GOOD] * 6) + "\n").encode())  # a blank first line
        run_worker()
        work = TrainsetImport.objects.select_related("trainset").get()
        self.assertEqual((work.status, work.trainset.status), ("succeeded", "ready"))
        self.assertEqual(
            list(work.trainset.rows.order_by("index").values_list("source_number", flat=True)),
            [2, 3, 4, 5, 6, 7],
        )
        self.assertEqual(self.uploads(), [])

    def test_reconcile_ends_an_import_whose_job_the_queue_lost(self) -> None:
        self.post("\n".join([GOOD] * 8).encode())
        work = TrainsetImport.objects.get()
        self.assertEqual(len(self.uploads()), 1)
        self.redis.flushdb()  # Redis restarted without persistence: the job is gone
        self.assertEqual(queue.reconcile_stale(), [])  # within the grace period: left alone
        TrainsetImport.objects.filter(pk=work.pk).update(updated=now() - timedelta(minutes=5))
        changed = queue.reconcile_stale()
        self.assertEqual([(type(row), row.pk) for row in changed], [(TrainsetImport, work.pk)])
        work.refresh_from_db()
        trainset = Trainset.objects.get()
        self.assertEqual((work.status, trainset.status), ("failed", "failed"))
        self.assertIn("The queue lost this job", trainset.error)
        self.assertEqual(self.uploads(), [])
        run_worker()  # nothing left to run, and nothing changes
        trainset.refresh_from_db()
        self.assertEqual(trainset.status, "failed")

    def test_reconcile_fails_a_trainset_left_importing_without_an_import_row(self) -> None:
        trainset = self.make_trainset()  # as a version that kept no import row left it
        Trainset.objects.filter(pk=trainset.pk).update(status="importing")
        queue.reconcile_stale()
        trainset.refresh_from_db()
        self.assertEqual(trainset.status, "failed")
        self.assertIn("interrupted", trainset.error)

    def test_a_worker_that_finds_the_import_ended_leaves_it_alone(self) -> None:
        self.post("\n".join([GOOD] * 8).encode())
        work = TrainsetImport.objects.get()
        queue.mark_failed(row=work, user=self.alice)  # before any worker claimed it
        # Marking it failed settles it at once (trainset failed, file removed), as every way an
        # import ends does; the worker then finds it ended and leaves it alone.
        self.assertEqual(Trainset.objects.get().status, "failed")
        run_worker()
        self.assertFalse(TrainsetRow.objects.exists())
        queue.reconcile_stale()
        self.assertEqual(Trainset.objects.get().status, "failed")
        self.assertEqual(self.uploads(), [])


@override_settings(BFT_TRAINSET_ASYNC_ROWS=5)
class QueueDownTestCase(WorkerTestCase):
    """Redis is down when a large upload is queued (committed for real: on_commit runs)."""

    def test_the_upload_ends_with_a_message_no_importing_trainset_and_no_file(self) -> None:
        dead = f"redis://127.0.0.1:{free_port()}/0"
        queues = {name: {**conf, "URL": dead} for name, conf in settings.RQ_QUEUES.items()}
        self.client.force_login(self.bob)
        with override_settings(RQ_QUEUES=queues, REDIS_URL=dead):
            r = self.client.post(
                URL, upload("big.jsonl", "\n".join([GOOD] * 8).encode()), follow=True
            )
        trainset = Trainset.objects.get()
        self.assertEqual(r.redirect_chain, [(f"/p/p1/trainsets/{trainset.pk}/", 302)])
        self.assertContains(r, "The queue was unavailable")
        self.assertContains(r, "The import failed; nothing was imported.")
        self.assertEqual(trainset.status, "failed")
        self.assertEqual(trainset.background_import.status, "failed")
        self.assertFalse(TrainsetRow.objects.exists())
        self.assertEqual(list((self.artifacts / "uploads").iterdir()), [])


@override_settings(BFT_TRAINSET_ASYNC_ROWS=5)
class ImportAdminTestCase(WebTestCase):
    def test_an_operator_marks_a_stuck_import_failed_in_the_admin(self) -> None:
        self.client.force_login(self.bob)
        with self.captureOnCommitCallbacks(execute=True):
            self.client.post(URL, upload("big.jsonl", "\n".join([GOOD] * 8).encode()))
        work = TrainsetImport.objects.get()
        self.alice.is_staff = self.alice.is_superuser = True
        self.alice.save()
        self.client.force_login(self.alice)
        base = "/admin/jobs/trainsetimport/"
        for url in (base, f"{base}{work.pk}/change/"):
            self.assertEqual(self.client.get(url).status_code, 200)
        r = self.client.post(base, {"action": "mark_failed", "_selected_action": [work.pk]})
        self.assertEqual(r.status_code, 302)
        work.refresh_from_db()
        self.assertEqual((work.status, Trainset.objects.get().status), ("failed", "failed"))
        self.assertEqual(list((self.artifacts / "uploads").iterdir()), [])
