"""The ASGI app: ``GET /v1/models`` and ``POST /v1/chat/completions`` for a project's API key.

Each route parses (``schemas``), authenticates and finds the model (``catalog``, in a worker
thread: the database never runs on the event loop), then hands the request to the backend and
awaits its Future (``asyncio.wrap_future``), so any number of requests wait together while the
engine's decoder thread batches them. Streaming sends OpenAI's server-sent events: a first chunk
with the role, the text as it decodes, a last chunk with ``finish_reason`` and the usage, a
usage-only chunk when ``stream_options.include_usage`` asks for it, then ``data: [DONE]``. A client
that goes away cancels its row in the batch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI, Header
from fastapi.responses import JSONResponse, StreamingResponse

from jobs.serve import catalog, errors, schemas
from jobs.serve.backend import Backend, ModelUnavailable
from jobs.serve.catalog import Caller, ServedModel

logger = logging.getLogger(__name__)

MAX_TOKENS_LIMIT = 8192  # the most a request may ask for (its model's context may be smaller)
_END = object()  # queued when the generation is over


async def in_thread(fn: Any, *args: Any) -> Any:
    """A database call, in a worker thread with Django's connection handling."""
    return await anyio.to_thread.run_sync(partial(catalog.call, fn, *args))


async def caller(authorization: Annotated[str | None, Header()] = None) -> Caller:
    """The project API key of ``Authorization: Bearer <key>`` (any scope may call models)."""
    scheme, _, raw = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise errors.missing_key()
    found: Caller | None = await in_thread(catalog.authenticate, raw.strip())
    if found is None:
        raise errors.invalid_key()
    return found


Authorized = Annotated[Caller, Depends(caller)]


def create_app(backend: Backend) -> FastAPI:
    app = FastAPI(
        title="bftweb model server",
        summary="OpenAI-compatible chat completions for a project's local and fine-tuned models.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    errors.install(app)

    @app.get("/v1/models")
    async def list_models(who: Authorized) -> dict[str, Any]:
        served: list[ServedModel] = await in_thread(catalog.models_of, who)
        return {
            "object": "list",
            "data": [
                schemas.model_card(id=m.id, created=m.created, owned_by=m.owned_by) for m in served
            ],
        }

    @app.get("/v1/models/{model_id:path}")
    async def retrieve_model(model_id: str, who: Authorized) -> dict[str, Any]:
        model: ServedModel | None = await in_thread(catalog.find_model, who, model_id)
        if model is None:
            raise errors.model_not_found(model_id)
        return schemas.model_card(id=model.id, created=model.created, owned_by=model.owned_by)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(
        body: schemas.ChatCompletionRequest, who: Authorized
    ) -> JSONResponse | StreamingResponse:
        body.check_supported()
        messages, stop = body.chat(), body.stops()
        model: ServedModel | None = await in_thread(catalog.find_model, who, body.model)
        if model is None:
            raise errors.model_not_found(body.model)
        max_tokens = body.max_completion_tokens or body.max_tokens or model.max_tokens
        if max_tokens > MAX_TOKENS_LIMIT:
            param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
            raise errors.ApiError(
                400, f"'{param}' is at most {MAX_TOKENS_LIMIT} here.", param=param
            )
        temperature = body.temperature if body.temperature is not None else model.temperature
        submit = partial(
            backend.submit,
            model.engine_name,
            messages,
            max_new_tokens=max_tokens,
            temperature=temperature,
            stop=stop,
        )
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                _stream(submit, model.id, include_usage=include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        future = await _submit(submit)
        result = await asyncio.wrap_future(future)
        return JSONResponse(
            schemas.completion(
                id=schemas.completion_id(),
                model=model.id,
                text=result.text,
                finish_reason=result.finish_reason,
                prompt_tokens=result.input_tokens,
                completion_tokens=result.output_tokens,
            )
        )

    return app


async def _submit(submit: Any, **kwargs: Any) -> Any:
    """Hand the request to the engine in a thread (the first request of a base loads it)."""
    try:
        return await anyio.to_thread.run_sync(partial(submit, **kwargs))
    except ModelUnavailable:
        raise errors.ApiError(
            503,
            "The model cannot be loaded on this server right now.",
            type=errors.SERVER_ERROR,
            code="model_unavailable",
        ) from None


def _sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


async def _stream(submit: Any, model: str, *, include_usage: bool) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[Any] = asyncio.Queue()

    def on_text(piece: str) -> None:  # the decoder thread: hand over to the event loop
        loop.call_soon_threadsafe(pieces.put_nowait, piece)

    id_, created = schemas.completion_id(), int(time.time())
    chunk = partial(schemas.chunk, id=id_, model=model, created=created)
    try:
        future = await _submit(submit, on_text=on_text)
    except errors.ApiError as exc:
        yield _sse(exc.body())
        yield _sse("[DONE]")
        return
    future.add_done_callback(lambda _: loop.call_soon_threadsafe(pieces.put_nowait, _END))
    streamed = 0
    try:
        yield _sse(chunk(delta={"role": "assistant", "content": ""}))
        while (piece := await pieces.get()) is not _END:
            streamed += len(piece)
            yield _sse(chunk(delta={"content": piece}))
        try:
            result = future.result()
        except Exception:
            logger.exception("generation failed")
            yield _sse(errors.error_body("The generation failed.", type=errors.SERVER_ERROR))
            yield _sse("[DONE]")
            return
        if rest := result.text[streamed:]:
            yield _sse(chunk(delta={"content": rest}))
        usage = schemas.usage(result.input_tokens, result.output_tokens)
        yield _sse(chunk(delta={}, finish_reason=result.finish_reason, usage_=usage))
        if include_usage:
            yield _sse(chunk(delta=None, usage_=usage))
        yield _sse("[DONE]")
    finally:
        future.cancel()  # the client went away (no-op once answered): free its row in the batch
