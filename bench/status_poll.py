"""The job status fragment under concurrent polling: latency (median, p95) and requests/s.

What it sets up: a fresh SQLite database (a temp dir) with one project, one running fine-tune job
and ``--points`` metric rows; a thread that plays the worker (every 2 s: one more step, one more
metric row, a fresh heartbeat, as jobs/tasks.py writes them); gunicorn on 127.0.0.1 (gthread
workers, DEBUG=False); and ``--clients`` threads that poll ``/p/<slug>/jobs/<pk>/status/`` with a
logged-in session cookie and ``HX-Request: true``, back to back, for ``--seconds``. Redis points at
a port where nothing listens: a healthy running job's poll must not need it.

Usage: ``python -m bench.status_poll [--clients 8] [--seconds 15] [--workers 2] [--threads 4]``.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bftweb.settings",
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "BFT_VAR_DIR": str(tmp),
        "DEBUG": "False",
        "SECRET_KEY": "bench-only-not-secret",
        "SECURE_SSL_REDIRECT": "False",
        "ALLOWED_HOSTS": "127.0.0.1",
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens: polls must not need it
        "LOG_LEVEL": "WARNING",
    }


def seed(points: int) -> tuple[str, str, int]:
    """Migrate and create the rows; returns (status path, session cookie value, job pk)."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command
    from django.utils.timezone import now

    from jobs.engine.types import FinetuneConfig, MetricSpec
    from jobs.models import (
        BootstrapRun,
        FinetuneJob,
        FinetuneMetric,
        LanguageModel,
        Membership,
        Program,
        Project,
        Trainset,
    )

    call_command("migrate", verbosity=0, interactive=False)
    user = User.objects.create_user("bench", password="bench-password-1")
    project = Project.objects.create(name="bench", slug="bench")
    Membership.objects.create(project=project, user=user, role="viewer")
    model = LanguageModel.objects.create(
        project=project, name="smollm2", model_name="smollm2", fine_tunable=True
    )
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
        status="succeeded",
        total=100,
        done=100,
    )
    job = FinetuneJob.objects.create(
        project=project,
        run=run,
        student=model,
        created_by=user,
        status="running",
        started=now(),
        config=FinetuneConfig(base_model="smollm2").to_dict(),
        step=points,
        total_steps=points * 2,
        last_loss=1.0,
        learning_rate=2e-4,
        tokens_per_s=300.0,
        eta_s=600.0,
        worker_name="bench-worker",
        device="cpu",
        log_tail="\n".join(f"step {i}: loss 1.0" for i in range(50)),
    )
    FinetuneMetric.objects.bulk_create(
        FinetuneMetric(job=job, step=s, loss=2.0 / (1 + s / 50), learning_rate=2e-4)
        for s in range(1, points + 1)
    )
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return f"/p/bench/jobs/{job.pk}/status/", session.session_key or "", job.pk


def play_worker(job_pk: int, stop: threading.Event) -> None:
    """Write progress as the fine-tune task does: one step and one metric row every 2 s."""
    from django.db import connection
    from django.utils.timezone import now

    from jobs.models import FinetuneJob, FinetuneMetric

    while not stop.wait(2.0):
        job = FinetuneJob.objects.get(pk=job_pk)
        step = job.step + 1
        FinetuneMetric.objects.create(job=job, step=step, loss=1.0, learning_rate=2e-4)
        FinetuneJob.objects.filter(pk=job_pk).update(step=step, last_loss=1.0, updated=now())
    connection.close()


def queries_per_poll(path: str) -> int:
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(User.objects.get(username="bench"))
    client.get(path)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path, headers={"HX-Request": "true"})
    assert response.status_code == 200, response.status_code
    return len(queries)


def poller(
    port: int,
    path: str,
    headers: dict[str, str],
    answered: Callable[[bytes], bool],
    until: float,
    latencies: list[float],
    errors: list[str],
) -> None:
    """GET ``path`` over one kept-alive connection until ``until``, timing each answer; an
    error is a failed connection, a status other than 200, or a body ``answered`` refuses."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Host": "127.0.0.1", **headers}
    while time.monotonic() < until:
        started = time.perf_counter()
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            errors.append(type(exc).__name__)
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            continue
        latencies.append(time.perf_counter() - started)
        if response.status != 200 or not answered(body):
            errors.append(f"HTTP {response.status}")
    conn.close()


def wait_until_up(port: int, server: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("gunicorn exited")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/accounts/login/", headers={"Host": "127.0.0.1"})
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.status_poll", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument(
        "--points", type=int, default=500, help="metric rows (loss points) already stored"
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bftweb-bench-poll-") as tmp_name:
        env = environment(Path(tmp_name))
        os.environ.update(env)
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        path, cookie, job_pk = seed(args.points)
        n_queries = queries_per_poll(path)
        latencies, errors, wall = load_gunicorn(
            env,
            workers=args.workers,
            threads=args.threads,
            clients=args.clients,
            seconds=args.seconds,
            play=lambda stop: play_worker(job_pk, stop),
            poll=lambda port, until, lat, err: poller(
                port,
                path,
                {"Cookie": f"sessionid={cookie}", "HX-Request": "true"},
                lambda body: b'id="job-status"' in body,
                until,
                lat,
                err,
            ),
        )
    title = (
        f"status poll: {args.clients} clients for {wall:.1f} s against gunicorn "
        f"({args.workers} workers x {args.threads} threads, SQLite, DEBUG=False, "
        f"{args.points}+ loss points)"
    )
    if report(title, latencies, errors, wall):
        print(f"  SQL queries per poll: {n_queries} (session, user, membership, job, loss points)")
        print(
            f"  a page polls every 2 s, so this serves about "
            f"{len(latencies) / wall * 2:.0f} open job pages"
        )


def load_gunicorn(
    env: dict[str, str],
    *,
    workers: int,
    threads: int,
    clients: int,
    seconds: float,
    play: Callable[[threading.Event], None],
    poll: Callable[[int, float, list[float], list[str]], None],
) -> tuple[list[float], list[str], float]:
    """gunicorn on a free port with ``env``; ``play(stop)`` on a thread (a worker writing
    progress) while ``clients`` threads run ``poll(port, until, latencies, errors)`` for
    ``seconds``. The sorted latencies, the errors and the wall time."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "bftweb.wsgi",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            str(workers),
            "-k",
            "gthread",
            "--threads",
            str(threads),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    stop = threading.Event()
    worker = threading.Thread(target=play, args=(stop,), daemon=True)
    latencies: list[float] = []
    errors: list[str] = []
    try:
        wait_until_up(port, server)
        worker.start()
        until = time.monotonic() + seconds
        started = time.monotonic()
        pollers = [
            threading.Thread(target=poll, args=(port, until, latencies, errors))
            for _ in range(clients)
        ]
        for thread in pollers:
            thread.start()
        for thread in pollers:
            thread.join()
        wall = time.monotonic() - started
    finally:
        stop.set()
        server.terminate()
        server.wait(20)
        worker.join(5)
    return sorted(latencies), errors, wall


def report(title: str, latencies: list[float], errors: list[str], wall: float) -> bool:
    """Print the run's requests, errors, throughput and latency; False when none succeeded."""
    n = len(latencies)
    if not n:
        print(f"no successful requests; errors: {errors[:5]}")
        return False
    p95 = latencies[min(n - 1, int(0.95 * n))]
    print(title)
    print(f"  requests {n}, errors {len(errors)}{' ' + str(sorted(set(errors))) if errors else ''}")
    print(f"  throughput {n / wall:.0f} requests/s")
    print(
        f"  latency median {1000 * statistics.median(latencies):.1f} ms, p95 {1000 * p95:.1f} ms, "
        f"max {1000 * latencies[-1]:.1f} ms"
    )
    return True


if __name__ == "__main__":
    main()
