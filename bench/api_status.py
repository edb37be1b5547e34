"""The API's run-status endpoint under concurrent polling: requests/s and latency (median, p95).

What it sets up: a fresh SQLite database (a temp dir) with one project, a read-only API key and one
running bootstrap run with ``--traces`` traces; a thread that plays the worker (every 2 s: one more
example done and a fresh heartbeat); gunicorn on 127.0.0.1 (gthread workers, DEBUG=False); and
``--clients`` threads that GET ``/api/v1/projects/<slug>/runs/<pk>/`` with
``Authorization: Bearer <key>``, back to back, for ``--seconds``. Throttling is off here
(BFT_API_KEY_RATE empty: the key's budget would otherwise be the limit measured). Redis points at
a port where nothing listens: a healthy running run's status must not need it.

Usage: ``python -m bench.api_status [--clients 8] [--seconds 15] [--workers 2] [--threads 4]``
(it runs itself in a child process).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench.status_poll import ROOT, environment, load_gunicorn, poller, report


def seed(traces: int) -> tuple[str, str, int]:
    """Migrate and create the rows; returns (run status path, API key, run pk)."""
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.utils.timezone import now

    from jobs.engine.types import MetricSpec
    from jobs.models import (
        BootstrapRun,
        LanguageModel,
        Membership,
        Program,
        Project,
        Trace,
        Trainset,
    )
    from jobs.services import api_keys

    call_command("migrate", verbosity=0, interactive=False)
    user = User.objects.create_user("bench", password="bench-password-1")
    project = Project.objects.create(name="bench", slug="bench")
    Membership.objects.create(project=project, user=user, role="owner")
    _, key = api_keys.create_api_key(project=project, user=user, name="bench", scope="read")
    model = LanguageModel.objects.create(project=project, name="smollm2", model_name="smollm2")
    trainset = Trainset.objects.create(project=project, name="t", status="ready", created_by=user)
    program = Program.objects.create(project=project, name="p", created_by=user)
    version = program.versions.create(
        version=1,
        created_by=user,
        spec={
            "name": "p",
            "modules": [{"name": "m", "type": "Predict", "signature": "text -> label"}],
        },
    )
    run = BootstrapRun.objects.create(
        project=project,
        trainset=trainset,
        program_version=version,
        teacher=model,
        created_by=user,
        metric=MetricSpec("exact_match", "label").to_dict(),
        status="running",
        started=now(),
        total=traces * 2,
        done=traces,
        passed=traces // 2,
        failed=traces - traces // 2,
    )
    Trace.objects.bulk_create(
        Trace(run=run, example_index=i, inputs={"text": f"row {i}"}, outputs={"label": "a"})
        for i in range(traces)
    )
    return f"/api/v1/projects/bench/runs/{run.pk}/", key, run.pk


def play_worker(run_pk: int, stop: threading.Event) -> None:
    """Write progress as the bootstrap task does: one more example and a heartbeat every 2 s."""
    from django.db import connection
    from django.db.models import F
    from django.utils.timezone import now

    from jobs.models import BootstrapRun

    while not stop.wait(2.0):
        BootstrapRun.objects.filter(pk=run_pk).update(done=F("done") + 1, updated=now())
    connection.close()


def queries_per_request(path: str, key: str) -> int:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {key}")
    client.get(path)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path)
    assert response.status_code == 200, response.content
    return len(queries)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.api_status", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--traces", type=int, default=1000, help="traces the run has stored")
    parser.add_argument("--here", action="store_true", help="run in this process (the child)")
    args = parser.parse_args(argv)
    if not args.here:
        # A child of its own: `python -m bench` runs every bench in one process, and Django (set
        # up here on a scratch database) can be set up only once per process.
        given = sys.argv[1:] if argv is None else argv
        cmd = [sys.executable, "-m", "bench.api_status", *given, "--here"]
        subprocess.run(cmd, cwd=ROOT, check=True)
        return

    with tempfile.TemporaryDirectory(prefix="bftweb-bench-api-") as tmp_name:
        env = {**environment(Path(tmp_name)), "BFT_API_KEY_RATE": ""}
        os.environ.update(env)
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        path, key, run_pk = seed(args.traces)
        n_queries = queries_per_request(path, key)
        latencies, errors, wall = load_gunicorn(
            env,
            workers=args.workers,
            threads=args.threads,
            clients=args.clients,
            seconds=args.seconds,
            play=lambda stop: play_worker(run_pk, stop),
            poll=lambda port, until, lat, err: poller(
                port,
                path,
                {"Authorization": f"Bearer {key}", "Accept": "application/json"},
                lambda body: json.loads(body).get("status") == "running",
                until,
                lat,
                err,
            ),
        )
    title = (
        f"API run status: {args.clients} clients for {wall:.1f} s against gunicorn "
        f"({args.workers} workers x {args.threads} threads, SQLite, DEBUG=False, API key auth)"
    )
    if report(title, latencies, errors, wall):
        print(f"  SQL queries per request: {n_queries} (the key with its maker's role, the run)")


if __name__ == "__main__":
    main()
