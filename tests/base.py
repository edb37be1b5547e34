"""The fixed cast every web-layer test uses (healthchecks' BaseTestCase).

p1: alice owner, bob operator, rita reviewer, victor viewer.  p2: charlie owner.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import User
from django.test import TestCase, TransactionTestCase

from jobs.engine.types import MetricSpec
from jobs.models import (
    BootstrapRun,
    LanguageModel,
    Membership,
    Program,
    ProgramVersion,
    Project,
    Trace,
    Trainset,
    TrainsetRow,
)

DEMO_DIR = Path(__file__).resolve().parent.parent / "jobs" / "demo"
SENTIMENT_SPEC = {
    "name": "sentiment",
    "modules": [{"name": "classify", "type": "Predict", "signature": "text -> sentiment"}],
}


if TYPE_CHECKING:
    _TestCase = TransactionTestCase  # what CastMixin is mixed into: TestCase or TransactionTestCase
else:
    _TestCase = object


class CastMixin(_TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.p1 = Project.objects.create(name="p1", slug="p1")
        self.p2 = Project.objects.create(name="p2", slug="p2")
        self.alice = self.member("alice", self.p1, Membership.Role.OWNER)
        self.bob = self.member("bob", self.p1, Membership.Role.OPERATOR)
        self.rita = self.member("rita", self.p1, Membership.Role.REVIEWER)
        self.victor = self.member("victor", self.p1, Membership.Role.VIEWER)
        self.charlie = self.member("charlie", self.p2, Membership.Role.OWNER)

    @staticmethod
    def member(username: str, project: Project, role: str) -> User:
        user = User.objects.create_user(username, f"{username}@example.org", "password")
        Membership.objects.create(project=project, user=user, role=role)
        return user

    # Small builders for the rows most tests need (no factory library).

    def make_trainset(
        self, rows: list[dict[str, Any]] | None = None, *, dev_every: int = 0
    ) -> Trainset:
        rows = (
            rows
            if rows is not None
            else [
                {"text": f"review {i}", "sentiment": "positive" if i % 2 else "negative"}
                for i in range(8)
            ]
        )
        trainset = Trainset.objects.create(
            project=self.p1,
            name="reviews",
            file_name="reviews.jsonl",
            row_count=len(rows),
            fields=[{"name": k, "type": "str", "fill_rate": 1.0} for k in rows[0]],
            status=Trainset.Status.READY,
            created_by=self.alice,
        )
        TrainsetRow.objects.bulk_create(
            TrainsetRow(
                trainset=trainset,
                index=i,
                data=row,
                split="dev" if dev_every and i % dev_every == dev_every - 1 else "train",
            )
            for i, row in enumerate(rows)
        )
        return trainset

    def make_program(self, spec: dict[str, Any] | None = None) -> ProgramVersion:
        program = Program.objects.create(project=self.p1, name="sentiment", created_by=self.alice)
        return ProgramVersion.objects.create(
            program=program, version=1, spec=spec or SENTIMENT_SPEC, created_by=self.alice
        )

    def make_model(self, name: str = "smollm2", **kwargs: Any) -> LanguageModel:
        kwargs.setdefault("project", self.p1)
        kwargs.setdefault("model_name", "smollm2")
        kwargs.setdefault("fine_tunable", True)
        return LanguageModel.objects.create(name=name, created_by=self.alice, **kwargs)

    def make_run(self, **kwargs: Any) -> BootstrapRun:
        kwargs.setdefault("project", self.p1)
        # Not setdefault: its default would be built (and saved) even when the caller gives one.
        if "trainset" not in kwargs:
            kwargs["trainset"] = self.make_trainset()
        if "program_version" not in kwargs:
            kwargs["program_version"] = self.make_program()
        if "teacher" not in kwargs:
            kwargs["teacher"] = self.make_model("teacher")
        kwargs.setdefault("metric", MetricSpec("exact_match", "sentiment").to_dict())
        kwargs.setdefault("total", 8)
        return BootstrapRun.objects.create(created_by=self.alice, **kwargs)

    def make_trace(self, run: BootstrapRun, index: int, **kwargs: Any) -> Trace:
        """A trace as the engine records it: one Predict call of "text -> sentiment"."""
        import dspy

        from jobs.engine.training_data import call_messages, signature_to_dict

        label = "positive" if index % 2 else "negative"
        kwargs.setdefault("passed", True)
        kwargs.setdefault("parsed", True)
        call: dict[str, Any] = {
            "predictor": "classify",
            "signature": signature_to_dict(
                dspy.Signature("text -> sentiment", "Classify the sentiment.")
            ),
            "inputs": {"text": f"review {index}"},
            "outputs": {"sentiment": label},
        }
        call["messages"] = call_messages(call)
        return Trace.objects.create(
            run=run,
            example_index=index,
            inputs=call["inputs"],
            labels={"sentiment": label},
            outputs=dict(call["outputs"]),
            calls=[call],
            score=1.0 if kwargs["passed"] else 0.0,
            **kwargs,
        )


class BaseTestCase(CastMixin, TestCase):
    """Most tests: rolled back after each test; Redis flushed; artifacts in a temp dir."""

    @pytest.fixture(autouse=True)
    def _services(self, rq_redis, bft_artifacts) -> None:
        self.redis = rq_redis
        self.artifacts = bft_artifacts


class WorkerTestCase(CastMixin, TransactionTestCase):
    """Tests whose rows a worker subprocess must see: committed for real, flushed afterwards."""

    @pytest.fixture(autouse=True)
    def _services(self, rq_redis, bft_artifacts) -> None:
        self.redis = rq_redis
        self.artifacts = bft_artifacts
