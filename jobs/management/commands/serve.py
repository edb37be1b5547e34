"""`manage.py serve`: the OpenAI-compatible model server (FastAPI on uvicorn), its own process."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs.serve.backend import DEFAULT_BATCH_WINDOW_S, DEFAULT_MAX_BATCH


class Command(BaseCommand):
    help = (
        "Serve the projects' local and fine-tuned models over an OpenAI-compatible HTTP API "
        "(GET /v1/models, POST /v1/chat/completions), authenticated with project API keys."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
        parser.add_argument("--port", type=int, default=8100, help="default: %(default)s")
        parser.add_argument(
            "--max-batch",
            type=int,
            default=DEFAULT_MAX_BATCH,
            help="rows decoded together per base model (default: %(default)s)",
        )
        parser.add_argument(
            "--batch-window-ms",
            type=float,
            default=DEFAULT_BATCH_WINDOW_S * 1000,
            help="an idle decoder waits this long for company before it starts (default: %(default)s)",
        )
        parser.add_argument(
            "--max-adapters",
            type=int,
            default=settings.BFT_SERVE_MAX_ADAPTERS,
            help="fine-tuned adapters kept loaded per base model, least recently used unloaded "
            "(default: BFT_SERVE_MAX_ADAPTERS, %(default)s)",
        )
        parser.add_argument(
            "--preload",
            action="append",
            default=[],
            metavar="MODEL",
            help="a local model name or fine-tuned id to load before serving (repeatable)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        import uvicorn

        from jobs.serve.app import create_app
        from jobs.serve.backend import EngineBackend

        if options["max_batch"] < 1 or options["max_adapters"] < 1:
            raise CommandError("--max-batch and --max-adapters must be at least 1")
        backend = EngineBackend(
            max_batch=options["max_batch"],
            batch_window_s=max(0.0, options["batch_window_ms"]) / 1000,
            max_adapters=options["max_adapters"],
        )
        for name in options["preload"]:
            self.stdout.write(f"loading {name} ...")
            backend.preload(name)
        host, port = options["host"], options["port"]
        self.stdout.write(
            self.style.SUCCESS(f"bftweb model server: http://{host}:{port}/v1  (Ctrl-C stops it)")
        )
        self.stdout.flush()
        uvicorn.run(
            create_app(backend),
            host=host,
            port=port,
            log_level="info",
            timeout_graceful_shutdown=10,
        )
