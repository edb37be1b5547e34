"""What pages may show of an error: its type and message, no filesystem paths, shortened."""

from __future__ import annotations

import re

# What a page shows of an error: provider error bodies and library messages can be long.
ERROR_MAX_CHARS = 500
# An absolute filesystem path (not the path of a URL): pages never show where files live.
_PATH_RE = re.compile(r"(?<![\w:/.])(?:/[\w.@+~-]+)+/?")


def public_text(text: str, *, limit: int = ERROR_MAX_CHARS) -> str:
    """``text`` without filesystem paths (each becomes its last part), at most ``limit`` chars."""
    text = _PATH_RE.sub(lambda m: "…/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(exc: BaseException) -> str:
    """An exception as pages show it."""
    return public_text(f"{type(exc).__name__}: {exc}".rstrip(": "))


def failure_reason(exc_type: type[BaseException], exc: BaseException) -> str:
    """Why RQ failed a job, from its failure callback's arguments."""
    if exc_type.__name__ == "AbandonedJobError":
        return "The worker died while running this job (RQ abandoned it)."
    return describe(exc)
