"""The OpenAI-compatible model server (``manage.py serve``): a project's local models over HTTP.

Its own process, beside the web process (which never imports torch) and the workers. vLLM's
OpenAI server is the model: routes only parse, authenticate and hand requests to the engine.

- ``app.py``: the FastAPI app: ``GET /v1/models``, ``POST /v1/chat/completions`` (plain and
  streamed as server-sent events), auth with project API keys.
- ``schemas.py``: the OpenAI request shape (pydantic) and the answer/chunk builders.
- ``errors.py``: every error in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.
- ``catalog.py``: the database side (keys, which models a project may call), run in threads.
- ``backend.py``: the engine side: one shared copy per base model, each fine-tuned student a
  per-request LoRA adapter in the same continuous batch (``jobs/engine/adapters.py``).
"""
