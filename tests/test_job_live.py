"""The live fine-tune job page: the polled status fragment, loss curve, actions, outputs, downloads."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import timedelta
from unittest import mock

import pytest
from django.conf import settings
from django.test import Client
from django.utils.timezone import now

from jobs.devtools import free_port
from jobs.engine.types import FinetuneConfig, FinetuneResult
from jobs.models import FinetuneJob, FinetuneMetric, LanguageModel
from jobs.services import artifacts, finetunes, queue
from jobs.work.finetunes import finish_finetune
from tests.web import READ_ALL, WebTestCase, streamed

DEAD_REDIS = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


def dead_redis() -> dict:
    """Settings that point every queue at a port where nothing listens."""
    queues = {name: {**conf, "URL": DEAD_REDIS} for name, conf in settings.RQ_QUEUES.items()}
    return {"REDIS_URL": DEAD_REDIS, "RQ_QUEUES": queues}


class JobLiveBase(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.bootstrap_run = self.make_run(status="succeeded", done=8)
        for i in range(4):
            self.make_trace(self.bootstrap_run, i)
        self.student = self.make_model("student")
        self.job = FinetuneJob.objects.create(
            project=self.p1,
            run=self.bootstrap_run,
            student=self.student,
            created_by=self.bob,
            config=FinetuneConfig(base_model="smollm2", max_steps=10).to_dict(),
            selection="passing",
            status="running",
            started=now() - timedelta(seconds=42),
            step=5,
            total_steps=10,
            epoch=0.5,
            last_loss=1.2345,
            learning_rate=2e-4,
            tokens_per_s=321.0,
            eta_s=40.0,
            train_rows=4,
            worker_name="gpu-box-1",
            device="cuda",
            log_tail="\n".join(f"line {i}" for i in range(40)),
        )
        FinetuneMetric.objects.bulk_create(
            FinetuneMetric(job=self.job, step=s, loss=2.0 - s / 10, learning_rate=2e-4)
            for s in range(1, 6)
        )
        self.url = f"/p/p1/jobs/{self.job.pk}/"
        self.status_url = f"{self.url}status/"

    def poll(self, user=None):
        self.login(user or self.victor)
        return self.client.get(self.status_url, headers={"HX-Request": "true"})

    def succeed(self) -> LanguageModel:
        """Finish the job the way the task does (jobs.work.finetunes.finish_finetune), with real files."""
        out = artifacts.job_output_dir(self.job)
        (out / "adapter").mkdir(parents=True)
        (out / "adapter" / "adapter_config.json").write_text('{"r": 16}')
        (out / "adapter" / "adapter_model.safetensors").write_bytes(b"\x00weights" * 5000)
        (out / "manifest.json").write_text(
            json.dumps({"model_id": "bftweb:smollm2:ft-x", "steps": 10})
        )
        (out / "train.jsonl").write_text('{"messages": []}\n{"messages": []}\n')
        result = FinetuneResult(
            model_id=f"bftweb:smollm2:ft-{self.job.pk}",
            output_dir=str(out),
            adapter_dir=str(out / "adapter"),
            manifest_path=str(out / "manifest.json"),
            steps=10,
            total_steps=10,
            stopped_early=False,
            final_loss=0.5,
            train_tokens=1000,
        )
        model = finish_finetune(self.job, result)
        assert model is not None
        return model


class JobStatusTestCase(JobLiveBase):
    def test_it_renders_only_the_fragment_and_keeps_polling_while_running(self) -> None:
        r = self.poll()
        self.assertContains(r, "hx-trigger=\"every 2s [document.visibilityState === 'visible']\"")
        self.assertContains(r, f'hx-get="/p/p1/jobs/{self.job.pk}/status/"')
        self.assertNotContains(r, "<html")
        self.assertContains(r, '<strong id="job-step">5/10</strong>')
        self.assertContains(r, 'value="50"')
        self.assertContains(r, "1.2345")  # loss
        self.assertContains(r, "2.0e-04")  # learning rate
        self.assertContains(r, "321")  # tokens/s
        self.assertContains(r, "about 40 s left")
        self.assertContains(r, "elapsed 4")  # 42 s, give or take the test's own time
        self.assertContains(r, "<code>gpu-box-1</code> on <strong>cuda</strong>")

    def test_it_draws_the_loss_curve_from_the_metric_rows(self) -> None:
        r = self.poll()
        self.assertContains(r, 'class="loss-curve"')
        self.assertContains(r, 'data-points="5"')
        FinetuneMetric.objects.create(job=self.job, step=6, loss=1.3)
        self.assertContains(self.poll(), 'data-points="6"')  # the curve grows

    def test_the_log_shows_its_last_lines_escaped(self) -> None:
        FinetuneJob.objects.filter(pk=self.job.pk).update(log_tail="ok\n<b>step</b> & more")
        r = self.poll()
        self.assertContains(r, "&lt;b&gt;step&lt;/b&gt; &amp; more")
        self.assertNotContains(r, "<b>step</b>")

    def test_only_the_last_twenty_log_lines_are_shown(self) -> None:
        r = self.poll()
        self.assertContains(r, "line 39")
        self.assertContains(r, "line 20")
        self.assertNotContains(r, "line 19\n")

    def test_it_stops_polling_once_terminal(self) -> None:
        for status in ("succeeded", "failed", "cancelled"):
            FinetuneJob.objects.filter(pk=self.job.pk).update(status=status, finished=now())
            r = self.poll()
            self.assertNotContains(r, "hx-trigger", msg_prefix=status)
            self.assertNotContains(r, "hx-get", msg_prefix=status)
            self.assertContains(r, f'<span class="badge {status}" id="job-state">')

    def test_a_failed_job_shows_its_error_escaped(self) -> None:
        FinetuneJob.objects.filter(pk=self.job.pk).update(
            status="failed", finished=now(), error="RuntimeError: <script>alert('x')</script>"
        )
        r = self.poll()
        self.assertContains(r, "RuntimeError: &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;")
        self.assertNotContains(r, "<script>alert")

    def test_the_poll_costs_two_queries_beyond_the_session_and_membership(self) -> None:
        self.login(self.victor)
        self.client.get(self.status_url)  # warm up
        # session, user, membership (get_project_for), the job, its thinned metric points.
        with self.assertNumQueries(5):
            r = self.client.get(self.status_url, headers={"HX-Request": "true"})
        self.assertEqual(r.status_code, 200)

    def test_a_long_training_curve_is_thinned_in_sql(self) -> None:
        FinetuneJob.objects.filter(pk=self.job.pk).update(step=2003, total_steps=4000)
        FinetuneMetric.objects.bulk_create(
            FinetuneMetric(job=self.job, step=s, loss=1.0) for s in range(6, 2004)
        )
        r = self.poll()
        # every 10th step of 4000 planned, and the latest
        self.assertContains(r, 'data-points="201"')

    def test_a_running_job_with_a_fresh_heartbeat_never_asks_redis(self) -> None:
        with self.settings(**dead_redis()):
            r = self.poll()
        self.assertEqual(r.status_code, 200)
        self.assertNotContains(r, "queue unavailable")


class JobQueueTestCase(JobLiveBase):
    def queued_job(self) -> FinetuneJob:
        with self.captureOnCommitCallbacks(execute=True):
            return finetunes.create_finetune_job(
                run=self.bootstrap_run,
                student=self.student,
                config=FinetuneConfig(base_model="smollm2"),
                selection="passing",
                user=self.bob,
            )

    def test_a_queued_job_shows_its_place_in_the_gpu_queue(self) -> None:
        first, second = self.queued_job(), self.queued_job()
        self.login(self.victor)
        r = self.client.get(f"/p/p1/jobs/{second.pk}/status/")
        self.assertContains(r, "2nd of 2 in the gpu queue")
        self.assertContains(r, "hx-trigger")
        r = self.client.get(f"/p/p1/jobs/{first.pk}/")
        self.assertContains(r, "1st of 2 in the gpu queue")

    def test_redis_down_shows_queue_unavailable_instead_of_a_500(self) -> None:
        job = self.queued_job()
        with self.settings(**dead_redis()):
            self.login(self.bob)
            for url in (f"/p/p1/jobs/{job.pk}/", f"/p/p1/jobs/{job.pk}/status/", "/p/p1/jobs/"):
                r = self.client.get(url)
                self.assertContains(r, "ueue unavailable", msg_prefix=url)  # "Queue"/"queue"
            # cancel and retry still work from the database
            r = self.client.post(f"/p/p1/jobs/{job.pk}/cancel/")
            self.assertEqual(r.status_code, 302)
            job.refresh_from_db()
            self.assertEqual(job.status, "cancelled")
            with self.captureOnCommitCallbacks(execute=True):
                r = self.client.post(f"/p/p1/jobs/{job.pk}/retry/")
            self.assertEqual(r.status_code, 302)
            job.refresh_from_db()
            self.assertEqual(job.status, "failed")  # could not be queued, and says so
            self.assertIn("The queue was unavailable", job.error)

    def test_a_stale_running_job_is_reconciled_by_the_poll(self) -> None:
        """No heartbeat for minutes and no RQ job: the poll itself marks it failed, with the reason."""
        FinetuneJob.objects.filter(pk=self.job.pk).update(updated=now() - timedelta(minutes=5))
        r = self.poll()
        self.assertContains(r, '<span class="badge failed" id="job-state">')
        self.assertContains(r, "The queue lost this job")
        self.assertNotContains(r, "hx-trigger")
        self.job.refresh_from_db()
        self.assertEqual(self.job.status, "failed")

    def test_the_poll_sends_the_hard_stop_once_the_cancel_grace_period_is_over(self) -> None:
        job = self.queued_job()
        FinetuneJob.objects.filter(pk=job.pk).update(
            status="running",
            cancel_requested=True,
            cancel_requested_at=now() - timedelta(minutes=5),
        )
        self.login(self.victor)
        with mock.patch("jobs.services.queue.send_stop_job_command") as stop:
            r = self.client.get(f"/p/p1/jobs/{job.pk}/status/")
        stop.assert_called_once_with(mock.ANY, str(job.rq_job_id))
        self.assertContains(r, "cancel requested: stopping at the next step")
        with mock.patch("jobs.services.queue.send_stop_job_command") as stop:
            self.client.get(f"/p/p1/jobs/{job.pk}/status/")
        stop.assert_not_called()  # one attempt per row every few seconds, not one per poll

    def test_a_stale_job_with_redis_down_is_left_alone_and_says_so(self) -> None:
        FinetuneJob.objects.filter(pk=self.job.pk).update(updated=now() - timedelta(minutes=5))
        with self.settings(**dead_redis()):
            r = self.poll()
        self.assertContains(r, "queue unavailable")
        self.assertContains(r, "hx-trigger")  # still running as far as we know: keep polling
        self.job.refresh_from_db()
        self.assertEqual(self.job.status, "running")


class JobActionsTestCase(JobLiveBase):
    def test_operators_cancel_a_running_job_cooperatively(self) -> None:
        self.login(self.bob)
        r = self.client.post(f"{self.url}cancel/", headers={"HX-Request": "true"})
        self.assertContains(r, "cancel requested: stopping at the next step")
        self.assertContains(r, "hx-trigger")  # still running until the trainer stops
        self.assertNotContains(r, "<html")
        self.job.refresh_from_db()
        self.assertTrue(self.job.cancel_requested)
        self.assertEqual(self.job.status, "running")

    def test_retry_resumes_a_failed_job_under_a_new_rq_id(self) -> None:
        FinetuneJob.objects.filter(pk=self.job.pk).update(
            status="failed", error="worker died", finished=now(), checkpoint_step=4
        )
        old_id = self.job.rq_job_id
        self.login(self.bob)
        # It resumes from the checkpoint on disk, not from the last step it reported.
        self.assertContains(self.client.get(self.url), "Resume from step 4")
        with self.captureOnCommitCallbacks(execute=True):
            r = self.client.post(f"{self.url}retry/")
        self.assertRedirects(r, self.url, fetch_redirect_response=False)
        self.job.refresh_from_db()
        # The counter goes back to where training resumes, and counts on from there.
        self.assertEqual((self.job.status, self.job.error, self.job.step), ("queued", "", 4))
        self.assertNotEqual(self.job.rq_job_id, old_id)
        self.assertEqual(queue.get_queue("gpu").job_ids, [str(self.job.rq_job_id)])

    def test_a_refused_action_says_why(self) -> None:
        self.login(self.bob)
        r = self.client.post(f"{self.url}retry/", headers={"HX-Request": "true"})
        self.assertContains(
            r, "Only a failed or cancelled job can be retried (this one is running)."
        )
        r = self.client.post(f"{self.url}retry/", follow=True)
        self.assertContains(r, "Only a failed or cancelled job can be retried")

    def test_viewers_see_no_buttons(self) -> None:
        r = self.poll(self.victor)
        self.assertNotContains(r, "/cancel/")
        self.assertContains(self.poll(self.bob), "/cancel/")


class JobPermissionsTestCase(JobLiveBase):
    def test_every_job_url_and_download(self) -> None:
        self.succeed()
        gets = [
            self.url,
            self.status_url,
            "/p/p1/jobs/",
            "/p/p1/jobs/table/",
            "/p/p1/jobs/workers/",
        ]
        gets += [f"{self.url}download/{kind}/" for kind in ("adapter", "train", "manifest")]
        for url in gets:
            self.assert_roles("get", url, READ_ALL)
        self.login(self.bob)
        for url in (f"{self.url}cancel/", f"{self.url}retry/"):
            self.assert_roles("post", url, {"reviewer": 403, "viewer": 403, "outsider": 404})
            self.assertEqual(self.client.get(url).status_code, 405)
        anonymous = Client()
        for url in [*gets, f"{self.url}cancel/"]:
            r = anonymous.get(url) if "cancel" not in url else anonymous.post(url)
            self.assertEqual(r.status_code, 302, url)
            self.assertIn("/accounts/login/", r["Location"])

    def test_another_projects_job_is_a_404_under_this_project(self) -> None:
        self.login(self.charlie)
        self.assertEqual(self.client.get(f"/p/p2/jobs/{self.job.pk}/").status_code, 404)
        self.assertEqual(
            self.client.get(f"/p/p2/jobs/{self.job.pk}/download/manifest/").status_code, 404
        )

    def test_cancel_and_retry_need_the_csrf_token(self) -> None:
        client, token = self.csrf_client(self.bob)
        self.assertEqual(client.post(f"{self.url}cancel/").status_code, 403)
        self.job.refresh_from_db()
        self.assertFalse(self.job.cancel_requested)
        self.assertEqual(
            client.post(f"{self.url}cancel/", headers={"X-CSRFToken": token}).status_code, 302
        )
        self.job.refresh_from_db()
        self.assertTrue(self.job.cancel_requested)
        FinetuneJob.objects.filter(pk=self.job.pk).update(status="failed")
        self.assertEqual(client.post(f"{self.url}retry/").status_code, 403)
        r = client.post(f"{self.url}retry/", {"csrfmiddlewaretoken": token})
        self.assertEqual(r.status_code, 302)


class JobOutputsTestCase(JobLiveBase):
    def test_success_shows_the_model_id_with_a_copy_button_and_the_downloads(self) -> None:
        model = self.succeed()
        r = self.poll()
        model_id = f"bftweb:smollm2:ft-{self.job.pk}"
        self.assertContains(r, f'<code id="model-id">{model_id}</code>')
        self.assertContains(r, 'data-copy="#model-id"')
        for kind in ("adapter", "program", "train", "manifest"):
            self.assertContains(r, f"/p/p1/jobs/{self.job.pk}/download/{kind}/")
        self.assertContains(r, f"path = &quot;bftweb-job-{self.job.pk}-program.json&quot;")
        self.assertContains(r, "text=&#x27;review 0&#x27;")  # the snippet calls it on a real input
        self.assertContains(r, model.name)

    def test_the_output_model_can_be_picked_as_teacher_and_student(self) -> None:
        model = self.succeed()
        self.assertEqual(
            (model.model_name, model.source_job_id, model.fine_tunable),
            (self.job.output_model_id, self.job.pk, True),
        )
        self.login(self.bob)
        self.assertContains(self.client.get("/p/p1/models/"), self.job.output_model_id)
        r = self.client.get("/p/p1/runs/new/")
        self.assertContains(r, f'<option value="{model.pk}">{model.name} ({model.model_name}')
        r = self.client.get(f"/p/p1/runs/{self.bootstrap_run.pk}/finetune/")
        self.assertContains(r, f'value="{model.pk}"')

    def test_the_adapter_downloads_as_a_streamed_zip(self) -> None:
        self.succeed()
        self.login(self.victor)
        r = self.client.get(f"{self.url}download/adapter/")
        self.assertTrue(r.streaming)
        self.assertEqual(r["Content-Type"], "application/zip")
        self.assertIn(f'filename="bftweb-job-{self.job.pk}-adapter.zip"', r["Content-Disposition"])
        archive = zipfile.ZipFile(io.BytesIO(streamed(r)))
        prefix = f"bftweb-job-{self.job.pk}-adapter/"
        self.assertEqual(
            sorted(archive.namelist()),
            [prefix + "adapter_config.json", prefix + "adapter_model.safetensors"],
        )
        self.assertEqual(archive.read(prefix + "adapter_model.safetensors"), b"\x00weights" * 5000)

    def test_the_training_data_and_manifest_download(self) -> None:
        self.succeed()
        self.login(self.victor)
        r = self.client.get(f"{self.url}download/train/")
        self.assertEqual(streamed(r).count(b"\n"), 2)
        self.assertIn("attachment", r["Content-Disposition"])
        r = self.client.get(f"{self.url}download/manifest/")
        self.assertEqual(json.loads(streamed(r))["steps"], 10)

    @pytest.mark.slow
    def test_the_program_json_points_every_predictor_at_the_fine_tuned_model(self) -> None:
        self.succeed()
        self.login(self.victor)
        r = self.client.get(f"{self.url}download/program/")
        self.assertEqual(r.status_code, 200, getattr(r, "content", b"")[:500])
        state = json.loads(streamed(r))
        predictor = state["classify.predict"] if "classify.predict" in state else state["classify"]
        self.assertEqual(predictor["lm"]["model"], self.job.output_model_id)
        self.assertEqual(predictor["demos"], [])
        self.assertEqual(state["bftweb"]["spec"]["modules"][0]["name"], "classify")
        self.assertEqual(state["bftweb"]["model_id"], self.job.output_model_id)
        self.assertTrue((artifacts.job_output_dir(self.job) / "program.json").is_file())  # kept

    def test_nothing_downloads_before_success_or_by_unknown_name(self) -> None:
        self.login(self.victor)
        for kind in ("adapter", "program", "train", "manifest"):
            self.assertEqual(self.client.get(f"{self.url}download/{kind}/").status_code, 404)
        self.succeed()
        self.assertEqual(self.client.get(f"{self.url}download/checkpoint/").status_code, 404)
        self.assertEqual(self.client.get(f"{self.url}download/..%2Fmodels/").status_code, 404)


class AdminJobActionsTestCase(JobLiveBase):
    def setUp(self) -> None:
        super().setUp()
        self.alice.is_staff = self.alice.is_superuser = True
        self.alice.save()

    def test_mark_failed_ends_a_stuck_job(self) -> None:
        self.login(self.alice)
        r = self.client.post(
            "/admin/jobs/finetunejob/", {"action": "mark_failed", "_selected_action": [self.job.pk]}
        )
        self.assertEqual(r.status_code, 302)
        self.job.refresh_from_db()
        self.assertEqual(self.job.status, "failed")
        self.assertIn("Marked failed by alice", self.job.error)

    def test_the_changelist_links_each_row_to_its_rq_job(self) -> None:
        self.login(self.alice)
        r = self.client.get("/admin/jobs/finetunejob/")
        # gpu sorts after default
        self.assertContains(r, f"/admin/rq/queues/1/{self.job.rq_job_id}/")
        r = self.client.get("/admin/jobs/bootstraprun/")
        self.assertContains(r, f"/admin/rq/queues/0/{self.bootstrap_run.rq_job_id}/")
        r = self.client.get(f"/admin/jobs/finetunejob/{self.job.pk}/change/")
        self.assertContains(r, f"/admin/rq/queues/1/{self.job.rq_job_id}/")
