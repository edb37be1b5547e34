"""Production settings: `check --deploy` is clean, and the dev secret key is refused."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis
from django.test import SimpleTestCase

from bftweb.settings import with_query_defaults
from tests.workers import ROOT

PRODUCTION = {
    "DEBUG": "False",
    "SECRET_KEY": "k3Jd9-qPz7vR2mXw8tY4uN6bC1eH5gL0aS-fD3jK7pQ9zX2vB8nM4",
    "ALLOWED_HOSTS": "bftweb.example.com",
}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "SECRET_KEY_FILE", "DEBUG")
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


class SettingsTestCase(SimpleTestCase):
    @pytest.mark.slow
    def test_check_deploy_is_clean_in_production(self) -> None:
        result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION)
        self.assertEqual(result.returncode, 0, result.stderr + result.stdout)
        self.assertIn("no issues", result.stdout)

    @pytest.mark.slow
    def test_production_refuses_the_dev_secret_key(self) -> None:
        result = manage("check", env={"DEBUG": "False", "SECRET_KEY": "dev-only-insecure"})
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("Set SECRET_KEY", result.stderr)

    @pytest.mark.slow
    def test_it_refuses_a_bad_boolean(self) -> None:
        result = manage("check", env={**PRODUCTION, "DEBUG": "yes"})
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("Unexpected value DEBUG='yes'", result.stderr)

    def test_timeouts_and_ttls_are_explicit_for_both_queues(self) -> None:
        from django.conf import settings

        self.assertEqual(set(settings.RQ_QUEUES), {"default", "gpu"})
        for queue in settings.RQ_QUEUES.values():
            self.assertGreater(queue["DEFAULT_TIMEOUT"], 180)
            self.assertGreater(queue["DEFAULT_RESULT_TTL"], 500)
            kwargs = redis.Redis.from_url(queue["URL"]).connection_pool.connection_kwargs
            self.assertEqual(kwargs["socket_timeout"], settings.BFT_REDIS_TIMEOUT_S)
            self.assertEqual(kwargs["socket_connect_timeout"], settings.BFT_REDIS_TIMEOUT_S)

    def test_a_timeout_in_redis_url_wins_over_the_default(self) -> None:
        url = with_query_defaults("redis://h:1/2?socket_timeout=30", socket_timeout=5, ssl="x")
        self.assertEqual(url, "redis://h:1/2?socket_timeout=30&ssl=x")
