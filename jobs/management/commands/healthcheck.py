"""Exit 0 when the database and Redis answer (the Docker HEALTHCHECK of web and worker containers)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from jobs.services import queue


class Command(BaseCommand):
    help = "Check that the database and Redis answer."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception as exc:
            raise CommandError(f"database: {exc}") from None
        health = queue.queue_health()
        if not health.redis_ok:
            raise CommandError(f"redis: {health.error}")
        self.stdout.write(f"ok: database, redis ({len(health.workers)} worker(s) alive)")
