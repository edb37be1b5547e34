"""Mark failed the runs and jobs whose worker died or whose RQ job failed (for cron, or `--every`)."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from jobs.services import queue


class Command(BaseCommand):
    help = "Reconcile queued/running rows with RQ: dead workers, failed, stopped or lost jobs end as failed."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--every", type=int, default=0, help="repeat every N seconds (default: once)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        while True:
            for row in queue.reconcile_stale():
                self.stdout.write(f"{row._meta.verbose_name} {row.pk}: {row.status}: {row.error}")
            if not options["every"]:
                return
            time.sleep(options["every"])
