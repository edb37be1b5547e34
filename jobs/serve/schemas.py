"""OpenAI's chat-completions request, as far as a local model can honour it, and the answers.

Accepted as OpenAI documents them: ``model``, ``messages`` (roles system, developer, user,
assistant; content a string or text parts), ``max_tokens`` / ``max_completion_tokens``,
``temperature`` (0: greedy), ``stop`` (a string or up to 4), ``n`` (1 only), ``stream`` and
``stream_options.include_usage``. ``top_p``, ``seed``, ``user``, penalties and other fields
clients send are accepted and ignored; what cannot be honoured (tools, images, logprobs,
``n`` > 1, JSON response formats) is refused with a 400 that names the parameter.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobs.serve.errors import ApiError

MAX_STOP = 4


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[TextPart] | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str = "text"


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    user: str | None = None
    logprobs: bool | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: ResponseFormat | None = None

    def chat(self) -> list[dict[str, str]]:
        """The messages as the chat template takes them (developer as system, text parts joined)."""
        out: list[dict[str, str]] = []
        for i, message in enumerate(self.messages):
            role = {"developer": "system"}.get(message.role, message.role)
            if role not in ("system", "user", "assistant"):
                raise ApiError(
                    400,
                    f"Invalid value for 'messages[{i}].role': {message.role!r} is not supported "
                    "here (system, developer, user and assistant are).",
                    param=f"messages[{i}].role",
                )
            content = message.content
            if isinstance(content, list):
                if any(part.type != "text" for part in content):
                    raise ApiError(
                        400,
                        "Only text content parts are supported by this model.",
                        param=f"messages[{i}].content",
                    )
                content = "".join(part.text or "" for part in content)
            out.append({"role": role, "content": content or ""})
        return out

    def stops(self) -> tuple[str, ...]:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stop) > MAX_STOP:
            raise ApiError(
                400, f"'stop' takes at most {MAX_STOP} sequences, not {len(stop)}.", param="stop"
            )
        return tuple(s for s in stop if s)

    def check_supported(self) -> None:
        """Refuse, naming the parameter, what a local model here cannot do."""
        if self.n not in (None, 1):
            raise ApiError(400, "Only n=1 is supported.", param="n")
        if self.tools:
            raise ApiError(400, "Tools are not supported by this model.", param="tools")
        if self.logprobs:
            raise ApiError(400, "logprobs are not supported by this model.", param="logprobs")
        if self.response_format is not None and self.response_format.type != "text":
            raise ApiError(
                400,
                "Only response_format type 'text' is supported by this model.",
                param="response_format",
            )


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion(
    *,
    id: str,
    model: str,
    text: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> dict[str, Any]:
    return {
        "id": id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chunk(
    *,
    id: str,
    model: str,
    created: int,
    delta: dict[str, Any] | None,
    finish_reason: str | None = None,
    usage_: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``; ``delta=None`` makes the usage-only chunk (no choices)."""
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage_ is not None:
        body["usage"] = usage_
    return body


def model_card(*, id: str, created: int, owned_by: str) -> dict[str, Any]:
    return {"id": id, "object": "model", "created": created, "owned_by": owned_by}
