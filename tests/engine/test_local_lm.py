"""The bundled model as a DSPy LM: loading, micro-batching, stop handling, clear errors."""

from __future__ import annotations

import threading

import pytest

from jobs.engine import model_store
from jobs.engine.decoding import cut_at_stop
from jobs.engine.local_lm import COMPLETED_MARKER, get_loaded_model, make_lm, try_model
from jobs.engine.types import ModelSpec

SMOL = ModelSpec("local", "smollm2", max_tokens=24)


@pytest.mark.slow
def test_it_answers_a_prompt_through_dspy():
    text = try_model(SMOL, "What is the capital of France? Answer in one word.")
    assert isinstance(text, str) and text.strip()


@pytest.mark.slow
def test_it_batches_concurrent_requests_into_shared_forward_passes():
    loaded = get_loaded_model("smollm2", batch_window_s=0.05, max_batch=16)
    lm = make_lm(SMOL, batch_window_s=0.05, max_batch=16)
    results: list[str] = [""] * 8
    barrier = threading.Barrier(8)

    def ask(i: int) -> None:
        barrier.wait()
        results[i] = lm(f"Write the number {i} in words.")[0]

    decoder = loaded.decoder
    before_prefills, before_requests = decoder.prefills, decoder.requests
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert decoder.requests - before_requests == 8
    assert decoder.prefills - before_prefills < 8  # requests that arrived together shared a prefill
    assert all(isinstance(r, str) for r in results)


@pytest.mark.slow
def test_a_request_decodes_the_same_alone_or_merged_into_a_running_batch():
    """Greedy rows give the same tokens alone, batched, and when joining a batch mid-flight."""
    prompts = [
        [{"role": "user", "content": "Name three colors."}],
        [{"role": "user", "content": "Tell me a very long story about a dragon and a knight."}],
        [{"role": "user", "content": "Hi"}],
    ]
    single = get_loaded_model("smollm2", batch_window_s=0.0, max_batch=1)
    alone = [single.generate(p, max_new_tokens=16, temperature=0.0, stop=()) for p in prompts]

    batched = get_loaded_model("smollm2", batch_window_s=0.0, max_batch=16)
    decoder = batched.decoder
    ids = [batched.chat_prompt_ids(p) for p in prompts]
    long_one = decoder.submit(ids[1], max_new_tokens=40, temperature=0.0, stop=())
    while decoder.forward_calls == 0 or not decoder._rows:  # the long row is decoding now
        pass
    joined = [decoder.submit(ids[i], max_new_tokens=16, temperature=0.0, stop=()) for i in (0, 2)]
    got = [joined[0].result(), long_one.result(), joined[1].result()]
    for together, by_itself in zip(got, alone, strict=True):
        assert together.input_tokens == by_itself.input_tokens
        # fp32 on CPU: identical; a different batch shape may only drift after many tokens.
        assert together.text.split()[:6] == by_itself.text.split()[:6]
    assert got[1].output_tokens == 40 and got[1].finish_reason == "length"


def test_it_cuts_the_answer_at_the_completed_marker():
    assert cut_at_stop(
        f"[[ ## a ## ]]\nx\n\n{COMPLETED_MARKER}\nrambling", (COMPLETED_MARKER,)
    ) == ("[[ ## a ## ]]\nx\n\n", True)
    assert cut_at_stop("no marker", (COMPLETED_MARKER,)) == ("no marker", False)


def test_it_names_an_unknown_local_model():
    with pytest.raises(model_store.UnknownModelError, match="no-such-model"):
        try_model(ModelSpec("local", "no-such-model"), "hi")
    with pytest.raises(model_store.UnknownModelError, match="bftweb:nothing:ft-1"):
        model_store.resolve("bftweb:nothing:ft-1")
    with pytest.raises(model_store.UnknownModelError, match="missing.gguf"):
        model_store.resolve("/tmp/missing.gguf")


def test_it_names_the_missing_api_key_variable(monkeypatch):
    monkeypatch.delenv("BFT_TEST_NO_SUCH_KEY", raising=False)
    spec = ModelSpec("litellm", "openai/gpt-4o-mini", api_key_env="BFT_TEST_NO_SUCH_KEY")
    with pytest.raises(ValueError, match="BFT_TEST_NO_SUCH_KEY"):
        make_lm(spec)


def test_it_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="unknown model kind"):
        make_lm(ModelSpec("remote", "x"))


@pytest.mark.slow
def test_a_script_that_used_a_local_model_exits_cleanly():
    """The decoder thread is stopped at exit: no "terminate called without an active exception"."""
    import subprocess
    import sys

    code = (
        "from jobs.engine.local_lm import try_model; from jobs.engine.types import ModelSpec; "
        "print(try_model(ModelSpec('local', 'smollm2', max_tokens=8), 'Hi'))"
    )
    for _ in range(3):  # the abort it guards against struck about every other run
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert "terminate called" not in out.stderr
