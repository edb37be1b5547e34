"""/api/v1/projects/<slug>/runs/: create (the run form's rules), list, detail with progress,
cancel, retry; and /finetunes/: create with every hyperparameter, detail, metric points, cancel,
retry, downloads and the output model id."""

from __future__ import annotations

import json

from jobs.engine.types import FinetuneConfig
from jobs.models import BootstrapRun, FinetuneJob, FinetuneMetric, LanguageModel, TraceSet
from jobs.services import artifacts, queue
from tests.api_client import READ, WRITE_OK, ApiTestCase

RUNS = "/api/v1/projects/p1/runs/"
JOBS = "/api/v1/projects/p1/finetunes/"


class RunApiTestCase(ApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.trainset = self.make_trainset()
        self.version = self.make_program()
        self.teacher = self.make_model("teacher")

    def payload(self, **overrides: object) -> dict[str, object]:
        return {
            "trainset": self.trainset.pk,
            "program_version": self.version.pk,
            "teacher": self.teacher.pk,
            "metric": "exact_match",
            "metric_field": "sentiment",
            "limit": 4,
            **overrides,
        }

    def test_it_queues_a_run_with_the_forms_defaults(self) -> None:
        with self.captureOnCommitCallbacks(execute=True):
            r = self.api("post", RUNS, self.payload())
        self.assertEqual(r.status_code, 201, r.content)
        body = r.json()
        run = BootstrapRun.objects.get()
        self.assertEqual((body["id"], body["status"], body["total"]), (run.pk, "queued", 4))
        self.assertEqual(run.created_by, self.alice)  # the key's maker
        self.assertEqual(run.config["num_demos"], 4)  # the form's initial value
        self.assertEqual(run.metric["threshold"], 1.0)
        self.assertEqual(queue.get_queue("default").job_ids, [str(run.rq_job_id)])
        body = self.api("get", f"{RUNS}{run.pk}/").json()  # the job is in Redis once committed
        self.assertEqual(body["queue"], {"available": True, "position": 1, "waiting": 1})

    def test_refusals_name_the_field(self) -> None:
        cases = {
            "metric_field": self.payload(metric_field="mood"),
            "trainset": self.payload(trainset=self.make_trainset().pk + 100),
            "metric": self.payload(metric="telepathy"),
            "num_threads": self.payload(num_threads=0),
            "pattern": self.payload(metric="regex"),
        }
        for field, payload in cases.items():
            with self.subTest(field=field):
                r = self.api("post", RUNS, payload)
                self.assertEqual(r.status_code, 400, r.content)
                self.assertIn(field, [e["field"] for e in r.json()["errors"]])
        other = self.make_model("theirs", project=self.p2)
        r = self.api("post", RUNS, self.payload(teacher=other.pk))
        self.assertEqual(r.json()["errors"][0]["field"], "teacher")
        self.assertFalse(BootstrapRun.objects.exists())

    def test_progress_cancel_and_retry(self) -> None:
        run = self.make_run(
            trainset=self.trainset, program_version=self.version, teacher=self.teacher
        )
        BootstrapRun.objects.filter(pk=run.pk).update(status="running", done=3, passed=2, failed=1)
        body = self.api("get", f"{RUNS}{run.pk}/").json()
        self.assertEqual((body["done"], body["passed"], body["percent"]), (3, 2, 38))
        self.assertIsNone(body["selection_counts"])
        r = self.api("post", f"{RUNS}{run.pk}/cancel/")
        self.assertEqual((r.status_code, r.json()["cancel_requested"]), (200, True))
        BootstrapRun.objects.filter(pk=run.pk).update(status="cancelled")
        r = self.api("post", f"{RUNS}{run.pk}/cancel/")
        self.assertEqual(r.status_code, 409)
        self.assertIn("Only a queued or running run", r.json()["detail"])
        self.assertEqual(r.json()["code"], "conflict")
        body = self.api("get", f"{RUNS}{run.pk}/").json()
        self.assertEqual(body["selection_counts"], {"approved": 0, "passing": 0, "all": 0})
        old_id = run.rq_job_id
        with self.captureOnCommitCallbacks(execute=True):
            r = self.api("post", f"{RUNS}{run.pk}/retry/")
        self.assertEqual((r.status_code, r.json()["status"]), (200, "queued"))
        run.refresh_from_db()
        self.assertNotEqual(run.rq_job_id, old_id)
        self.assertEqual(self.api("post", f"{RUNS}{run.pk}/retry/").status_code, 409)

    def test_a_run_its_smoke_test_paused_can_be_continued(self) -> None:
        run = self.make_run(
            trainset=self.trainset, program_version=self.version, teacher=self.teacher
        )
        BootstrapRun.objects.filter(pk=run.pk).update(status="checked")
        url = f"{RUNS}{run.pk}/continue/"
        self.assertEqual(self.api("post", url, key="ro").status_code, 403)
        with self.captureOnCommitCallbacks(execute=True):
            r = self.api("post", url)
        self.assertEqual((r.status_code, r.json()["status"]), (200, "queued"))
        self.assertEqual(self.api("post", url).status_code, 409)

    def test_a_queued_run_cancels_at_once(self) -> None:
        with self.captureOnCommitCallbacks(execute=True):
            run_id = self.api("post", RUNS, self.payload()).json()["id"]
        r = self.api("post", f"{RUNS}{run_id}/cancel/")
        self.assertEqual(r.json()["status"], "cancelled")

    def test_keys_and_roles(self) -> None:
        self.assert_keys("get", RUNS, READ)
        self.assert_keys("post", RUNS, {**WRITE_OK, "rw": 201}, self.payload())
        run = BootstrapRun.objects.get()
        self.assert_keys("get", f"{RUNS}{run.pk}/", READ)
        self.assert_keys("post", f"{RUNS}{run.pk}/cancel/", {**WRITE_OK, "rw": 200})
        self.assert_keys("post", f"{RUNS}{run.pk}/retry/", {**WRITE_OK, "rw": 200})
        theirs = self.make_run(
            project=self.p2,
            trainset=self.trainset,
            program_version=self.version,
            teacher=self.make_model("t2", project=self.p2),
        )
        self.assertEqual(self.api("get", f"{RUNS}{theirs.pk}/").status_code, 404)
        self.assertEqual(self.api("post", f"{RUNS}{theirs.pk}/cancel/").status_code, 404)
        self.assertEqual(
            self.api("get", f"/api/v1/projects/p2/runs/{theirs.pk}/", key="other").status_code, 200
        )


class FinetuneApiTestCase(ApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.bootstrap_run = self.make_run(status="succeeded")
        self.student = self.make_model("student")
        for i in range(6):
            self.make_trace(self.bootstrap_run, i, passed=i != 5)

    def payload(self, **overrides: object) -> dict[str, object]:
        return {
            "run": self.bootstrap_run.pk,
            "student": self.student.pk,
            "selection": "passing",
            "max_steps": 3,
            "lora_r": 4,
            "learning_rate": 0.001,
            "target_modules": "q_proj, v_proj",
            **overrides,
        }

    def test_it_queues_a_job_with_every_hyperparameter(self) -> None:
        with self.captureOnCommitCallbacks(execute=True):
            r = self.api("post", JOBS, self.payload())
        self.assertEqual(r.status_code, 201, r.content)
        job = FinetuneJob.objects.get()
        config = job.finetune_config()
        self.assertEqual(
            (config.max_steps, config.lora_r, config.learning_rate, config.target_modules),
            (3, 4, 0.001, ("q_proj", "v_proj")),
        )
        self.assertEqual(config.lora_alpha, FinetuneConfig(base_model="-").lora_alpha)  # default
        self.assertTrue(job.evaluate_when_done)  # the form's default: on
        assert job.trace_set is not None
        self.assertEqual(job.trace_set.trace_count, 5)  # the passing traces, frozen now
        self.assertEqual(queue.get_queue("gpu").job_ids, [str(job.rq_job_id)])
        body = r.json()
        self.assertEqual(
            (body["status"], body["trace_set"], body["output_model_id"]),
            ("queued", job.trace_set_id, ""),
        )

    def test_it_trains_on_a_frozen_trace_set(self) -> None:
        trace_set = self.api(
            "post", f"{RUNS}{self.bootstrap_run.pk}/trace-sets/", {"selection": "passing"}
        ).json()
        r = self.api("post", JOBS, self.payload(trace_set=trace_set["id"]))
        self.assertEqual(r.status_code, 201, r.content)
        self.assertEqual(r.json()["trace_set"], trace_set["id"])
        self.assertEqual(TraceSet.objects.count(), 1)

    def test_evaluation_and_label_cap_are_passed_on(self) -> None:
        r = self.api("post", JOBS, self.payload(evaluate_when_done=False, max_label_share=0.5))
        self.assertEqual(r.status_code, 201, r.content)
        job = FinetuneJob.objects.get()
        self.assertFalse(job.evaluate_when_done)
        assert job.trace_set is not None
        self.assertEqual(job.trace_set.rule["balance"]["max_share"], 0.5)

    def test_refusals_name_the_field(self) -> None:
        cases = {
            "run": self.payload(run=self.bootstrap_run.pk + 99),
            "student": self.payload(
                student=self.make_model("api", kind="litellm", model_name="openai/x").pk
            ),
            "lora_dropout": self.payload(lora_dropout=1.5),
            "target_modules": self.payload(target_modules="q_proj; drop table"),
            "selection": self.payload(selection="everything"),
            "max_steps": self.payload(max_steps=0),
        }
        for field, payload in cases.items():
            with self.subTest(field=field):
                r = self.api("post", JOBS, payload)
                self.assertEqual(r.status_code, 400, r.content)
                self.assertIn(field, [e["field"] for e in r.json()["errors"]])
        r = self.api("post", JOBS, self.payload(selection="approved"))
        self.assertEqual(r.json()["errors"][0]["field"], None)  # nothing approved yet
        self.assertFalse(FinetuneJob.objects.exists())

    def finished_job(self) -> FinetuneJob:
        with self.captureOnCommitCallbacks(execute=True):
            job_id = self.api("post", JOBS, self.payload()).json()["id"]
        job = FinetuneJob.objects.get(pk=job_id)
        FinetuneMetric.objects.bulk_create(
            FinetuneMetric(job=job, step=s, loss=1.0 / s) for s in range(1, 4)
        )
        out = artifacts.job_output_dir(job)
        (out / "adapter").mkdir(parents=True)
        (out / "adapter" / "adapter_config.json").write_text("{}")
        (out / "manifest.json").write_text(json.dumps({"steps": 3}))
        model_id = f"bftweb:smollm2:ft-{job.pk}"
        FinetuneJob.objects.filter(pk=job.pk).update(
            status="succeeded", step=3, total_steps=3, output_model_id=model_id, output_dir=str(out)
        )
        LanguageModel.objects.create(
            project=self.p1, name=f"student ft-{job.pk}", model_name=model_id, source_job=job
        )
        job.refresh_from_db()
        return job

    def test_detail_metrics_downloads_and_the_output_model(self) -> None:
        job = self.finished_job()
        body = self.api("get", f"{JOBS}{job.pk}/").json()
        self.assertEqual((body["status"], body["percent"]), ("succeeded", 100))
        self.assertEqual(body["output_model_id"], f"bftweb:smollm2:ft-{job.pk}")
        self.assertEqual(body["output_model"], LanguageModel.objects.get(source_job=job).pk)
        urls = {d["kind"]: d["url"] for d in body["downloads"]}
        self.assertEqual(urls["manifest"], f"{JOBS}{job.pk}/artifacts/manifest/")
        r = self.api("get", urls["manifest"])
        self.assertEqual(json.loads(b"".join(r.streaming_content)), {"steps": 3})
        r = self.api("get", urls["adapter"], headers={"Accept": "application/zip"})
        self.assertEqual((r.status_code, r["Content-Type"]), (200, "application/zip"))
        self.assertEqual(self.api("get", urls["train"]).status_code, 404)  # not written
        self.assertEqual(self.api("get", f"{JOBS}{job.pk}/artifacts/secrets/").status_code, 404)
        metrics = self.api("get", f"{JOBS}{job.pk}/metrics/", {"page_size": 2}).json()
        self.assertEqual([m["step"] for m in metrics["results"]], [1, 2])
        self.assertEqual(
            [m["step"] for m in self.api("get", metrics["next"]).json()["results"]], [3]
        )
        self.assert_keys("get", urls["manifest"], READ)
        self.assertEqual(
            self.api("get", f"/api/v1/projects/p2/finetunes/{job.pk}/", key="other").status_code,
            404,
        )

    def test_cancel_and_retry(self) -> None:
        with self.captureOnCommitCallbacks(execute=True):
            job_id = self.api("post", JOBS, self.payload()).json()["id"]
        self.assert_keys("post", f"{JOBS}{job_id}/cancel/", {**WRITE_OK, "rw": 200})
        self.assertEqual(FinetuneJob.objects.get().status, "cancelled")
        with self.captureOnCommitCallbacks(execute=True):
            r = self.api("post", f"{JOBS}{job_id}/retry/")
        self.assertEqual(r.json()["status"], "queued")
        self.assertEqual(self.api("post", f"{JOBS}{job_id}/retry/").status_code, 409)

    def test_keys_and_roles(self) -> None:
        self.assert_keys("get", JOBS, READ)
        self.assert_keys("post", JOBS, {**WRITE_OK, "rw": 201}, self.payload())
        job = FinetuneJob.objects.get()
        self.assert_keys("get", f"{JOBS}{job.pk}/", READ)
        self.assert_keys("get", f"{JOBS}{job.pk}/metrics/", READ)
