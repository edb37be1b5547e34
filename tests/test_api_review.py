"""A run's traces and trace sets through the API: the review filters, detail with the training
messages, decide (approve, reject, edit, comment), bulk decide by filter, freeze, list, export."""

from __future__ import annotations

import json

from jobs.models import Trace, TraceDecision, TraceSet
from tests.api_client import READ, WRITE_OK, ApiTestCase


class ReviewApiTestCase(ApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.bootstrap_run = self.make_run(status="succeeded")
        self.traces = [self.make_trace(self.bootstrap_run, i, passed=i % 3 != 0) for i in range(6)]
        self.url = f"/api/v1/projects/p1/runs/{self.bootstrap_run.pk}/traces/"
        self.sets = f"/api/v1/projects/p1/runs/{self.bootstrap_run.pk}/trace-sets/"

    def indexes(self, response) -> list[int]:
        return [t["example_index"] for t in response.json()["results"]]

    def test_the_list_filters_as_the_review_page_does(self) -> None:
        self.assertEqual(self.indexes(self.api("get", self.url)), [0, 1, 2, 3, 4, 5])
        self.assertEqual(self.indexes(self.api("get", self.url, {"outcome": "failed"})), [0, 3])
        self.assertEqual(self.indexes(self.api("get", self.url, {"q": "review 4"})), [4])
        self.assertEqual(self.indexes(self.api("get", self.url, {"min": "0.5"})), [1, 2, 4, 5])
        r = self.api("get", self.url, {"state": "unreviewd"})
        self.assertEqual((r.status_code, r.json()["errors"][0]["field"]), (400, "state"))
        r = self.api("get", self.url, {"min": "high"})
        self.assertEqual(r.json()["errors"][0]["field"], "min")
        self.assertNotIn("calls", self.api("get", self.url).json()["results"][0])

    def test_detail_shows_the_training_messages_and_history(self) -> None:
        trace = self.traces[1]
        body = self.api("get", f"{self.url}{trace.pk}/").json()
        self.assertEqual(body["outputs"], {"sentiment": "positive"})
        messages = body["training"]["calls"][0]["messages"]
        self.assertEqual(messages[-1]["role"], "assistant")
        self.assertEqual(body["history"], [])

    def test_decide_approve_reject_comment_and_edit(self) -> None:
        trace = self.traces[1]
        url = f"{self.url}{trace.pk}/decide/"
        r = self.api("post", url, {"verdict": "approve", "comment": "fine"})
        self.assertEqual((r.status_code, r.json()["review_state"]), (200, "approved"))
        self.assertEqual(r.json()["history"][0]["user"], "alice")
        r = self.api("post", url, {"verdict": "reject"})
        self.assertEqual(r.json()["review_state"], "rejected")
        r = self.api("post", url, {"verdict": "comment"})
        self.assertEqual((r.status_code, r.json()["errors"][0]["field"]), (400, None))
        r = self.api(
            "post",
            url,
            {"verdict": "edit", "edited_outputs": {"sentiment": "negative"}, "approve": True},
        )
        self.assertEqual(r.status_code, 200, r.content)
        body = r.json()
        self.assertEqual(
            (body["edited_outputs"], body["review_state"]), ({"sentiment": "negative"}, "approved")
        )
        self.assertIn("negative", body["training"]["calls"][0]["messages"][-1]["content"])
        r = self.api("post", url, {"verdict": "edit", "edited_outputs": {"mood": "x"}})
        self.assertEqual(r.json()["errors"][0]["field"], "edited_outputs.mood")
        r = self.api("post", url, {"verdict": "edit"})
        self.assertEqual(r.json()["errors"][0]["field"], "edited_outputs")
        r = self.api("post", url, {"verdict": "maybe"})
        self.assertEqual(r.json()["errors"][0]["field"], "verdict")
        self.assertEqual(
            list(TraceDecision.objects.filter(trace=trace).values_list("verdict", flat=True)),
            ["approve", "reject", "edit", "approve"],
        )

    def test_bulk_decide_by_filter(self) -> None:
        r = self.api(
            "post",
            f"{self.url}bulk-decide/",
            {"verdict": "approve", "filter": {"outcome": "passed"}},
        )
        self.assertEqual(r.json(), {"decided": 4})
        r = self.api(
            "post",
            f"{self.url}bulk-decide/",
            {"verdict": "approve", "filter": {"outcome": "passed"}},
        )
        self.assertEqual(r.json(), {"decided": 0})  # repeating adds nothing
        self.assertEqual(Trace.objects.filter(review_state="approved").count(), 4)
        r = self.api(
            "post",
            f"{self.url}bulk-decide/",
            {"verdict": "approve", "filter": {"state": "aproved"}},
        )
        self.assertEqual((r.status_code, r.json()["errors"][0]["field"]), (400, "filter.state"))
        r = self.api("post", f"{self.url}bulk-decide/", {"verdict": "edit"})
        self.assertEqual(r.json()["errors"][0]["field"], "verdict")
        r = self.api("post", f"{self.url}bulk-decide/", {"verdict": "reject"})
        self.assertEqual(r.json(), {"decided": 6})

    def test_freeze_list_and_export(self) -> None:
        r = self.api("post", self.sets, {"selection": "passing", "name": "first"})
        self.assertEqual(r.status_code, 201, r.content)
        first = r.json()
        self.assertEqual((first["version"], first["trace_count"], first["name"]), (1, 4, "first"))
        r = self.api("post", self.sets, {"selection": "passing", "filter": {"q": "review 1"}})
        self.assertEqual((r.json()["version"], r.json()["trace_count"]), (2, 1))
        r = self.api("post", self.sets, {"selection": "approved"})
        self.assertEqual((r.status_code, r.json()["errors"][0]["field"]), (400, "selection"))
        self.assertEqual(
            [s["version"] for s in self.api("get", self.sets).json()["results"]], [2, 1]
        )
        r = self.api("get", f"{self.sets}{first['id']}/export/jsonl/")
        rows = [json.loads(line) for line in b"".join(r.streaming_content).splitlines()]
        self.assertEqual(len(rows), 4)
        self.assertIn("messages", rows[0])
        r = self.api("get", f"{self.sets}{first['id']}/export/csv/", headers={"Accept": "text/csv"})
        self.assertTrue(b"".join(r.streaming_content).startswith(b"example_index,"))
        self.assertEqual(self.api("get", f"{self.sets}{first['id']}/export/xlsx/").status_code, 400)

    def test_keys_and_roles(self) -> None:
        trace = self.traces[1]
        self.assert_keys("get", self.url, READ)
        self.assert_keys("get", f"{self.url}{trace.pk}/", READ)
        self.assert_keys(
            "post", f"{self.url}{trace.pk}/decide/", {**WRITE_OK, "rw": 200}, {"verdict": "approve"}
        )
        self.assert_keys(
            "post", f"{self.url}bulk-decide/", {**WRITE_OK, "rw": 200}, {"verdict": "approve"}
        )
        self.assert_keys("post", self.sets, {**WRITE_OK, "rw": 201}, {"selection": "passing"})
        trace_set = TraceSet.objects.get()
        self.assert_keys("get", self.sets, READ)
        self.assert_keys("get", f"{self.sets}{trace_set.pk}/", READ)
        self.assert_keys("get", f"{self.sets}{trace_set.pk}/export/csv/", READ)
        # a reviewer's session may decide; a viewer's may not
        from django.test import Client

        for user, status in ((self.rita, 200), (self.victor, 403)):
            client = Client()
            client.force_login(user)
            r = self.api(
                "post",
                f"{self.url}{trace.pk}/decide/",
                {"verdict": "reject"},
                key="session",
                client=client,
            )
            self.assertEqual(r.status_code, status)
        # another run's traces are not this run's
        other = self.make_run(
            trainset=self.bootstrap_run.trainset,
            program_version=self.bootstrap_run.program_version,
            teacher=self.bootstrap_run.teacher,
        )
        self.assertEqual(
            self.api("get", f"/api/v1/projects/p1/runs/{other.pk}/traces/{trace.pk}/").status_code,
            404,
        )
        self.assertEqual(
            self.api(
                "get", f"/api/v1/projects/p2/runs/{self.bootstrap_run.pk}/traces/", key="other"
            ).status_code,
            404,
        )
