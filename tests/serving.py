"""What the model server's tests share: the models and keys of the cast's projects, and a real
`manage.py serve` process on 127.0.0.1 pointed at the test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.engine import model_store
from jobs.models import FinetuneJob, LanguageModel
from jobs.services import api_keys
from jobs.services.model_policy import project_owner_key
from tests import students
from tests.workers import ROOT, database_url_for_workers, wait_for

if TYPE_CHECKING:
    from tests.base import WorkerTestCase

    _Base = WorkerTestCase
else:
    _Base = object


class ServedModelsMixin(_Base):
    """p1 has the bundled base, a LiteLLM teacher and two fine-tuned students of the base (A and
    B); p2 has its own base. ``key1`` is a read-only key of p1, ``key2`` one of p2."""

    real_adapters = False  # True: the students' trained adapters (trains them once, then cached)

    def setUp(self) -> None:
        super().setUp()
        self.base = self.make_model("smollm2", max_tokens=24)
        self.make_model(
            "gpt", kind=LanguageModel.Kind.LITELLM, model_name="openai/gpt-4o-mini", max_tokens=24
        )
        self.make_model("p2 base", project=self.p2, max_tokens=24)
        run = self.make_run(
            teacher=self.base, program_version=self.make_program(students.PROGRAM_SPEC)
        )
        self.students = {}
        for student in ("A", "B"):
            model_id = students.model_id(student)
            job = FinetuneJob.objects.create(
                project=self.p1,
                run=run,
                student=self.base,
                status=FinetuneJob.Status.SUCCEEDED,
                output_model_id=model_id,
                created_by=self.alice,
            )
            self.make_model(
                f"smollm2 ft-{student}", model_name=model_id, source_job=job, max_tokens=24
            )
            adapter = (
                students.adapter_dir(student)
                if self.real_adapters
                else self.artifacts / f"adapter-{student}"
            )
            model_store.register_finetuned(
                model_id,
                base_model="smollm2",
                adapter_dir=adapter,
                manifest={},
                owner=project_owner_key(self.p1),
            )
            self.students[student] = model_id
        _, self.key1 = api_keys.create_api_key(
            project=self.p1, user=self.alice, name="pipeline", scope="read"
        )
        _, self.key2 = api_keys.create_api_key(
            project=self.p2, user=self.charlie, name="other", scope="read_write"
        )


def start_server(log: Path, port: int, *args: str) -> subprocess.Popen[bytes]:
    """`manage.py serve --port PORT`, in its own process group, on the test database."""
    env = dict(os.environ, DATABASE_URL=database_url_for_workers(), PYTHONUNBUFFERED="1")
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(port), *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def request(
    url: str, *, key: str | None = None, body: dict[str, Any] | None = None, method: str = ""
) -> tuple[int, Any]:
    """(status, parsed JSON body) of one plain HTTP request."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method or None)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_until_up(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    def up() -> bool:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            return request(f"{base_url}/models")[0] == 401
        except OSError:
            return False

    wait_for(up, timeout=120, what="the model server", every=0.3)
