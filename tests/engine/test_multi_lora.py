"""Many fine-tuned students of one base from one copy: per-row LoRA adapters in one batch.

Two tiny students of the bundled SmolLM2 (tests/students.py: A answers the sentiment, B always
"mixed") and the base itself, decoded together, give exactly what each gives alone (greedy); the
adapter pool's cap unloads the least recently used idle adapter and never one with rows in
flight; a cancelled row leaves the batch; streamed text adds up to the answer.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest

from jobs.engine.adapters import AdapterPool, AdapterRef
from jobs.engine.decoding import Generation, _held_back
from jobs.engine.local_lm import SharedBaseModel, get_shared_base, served_model
from tests import students

# One xdist process runs them all: they share the module's loaded model and its adapters.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("engine-multi-lora")]

STOP = ("[[ ## completed ## ]]",)
REVIEW = "I really loved the food here."


@pytest.fixture(scope="module")
def ids(artifacts_dir) -> dict[str, str]:
    return {student: students.register(student) for student in ("A", "B")}


@pytest.fixture(scope="module")
def shared(ids) -> SharedBaseModel:
    base, _ = served_model(ids["A"], batch_window_s=0.2, max_batch=8, max_adapters=4)
    return base


def refs(ids: dict[str, str]) -> dict[str, AdapterRef | None]:
    out: dict[str, AdapterRef | None] = {"base": None}
    for student, model_id in ids.items():
        _, out[student] = served_model(model_id, batch_window_s=0.2, max_batch=8, max_adapters=4)
    return out


def ask(model: SharedBaseModel, adapter: AdapterRef | None, text: str = REVIEW, **kw) -> Future:
    kw.setdefault("max_new_tokens", 20)
    return model.submit(
        students.prompt(text), adapter=adapter, temperature=0.0, stop=kw.pop("stop", STOP), **kw
    )


def test_students_and_the_base_in_one_batch_answer_as_each_alone(ids, shared) -> None:
    adapters = refs(ids)
    order = ["A", "B", "base", "A"]
    texts = [REVIEW, REVIEW, REVIEW, "It broke after one day."]
    alone = [ask(shared, adapters[k], t).result() for k, t in zip(order, texts, strict=True)]
    assert alone[0].text == "[[ ## sentiment ## ]]\npositive\n\n"
    assert alone[1].text == "[[ ## sentiment ## ]]\nmixed\n\n"
    assert alone[3].text == "[[ ## sentiment ## ]]\nnegative\n\n"
    assert alone[2].text != alone[0].text  # the base was not fine-tuned

    decoder = shared.decoder
    prefills = decoder.prefills
    futures = [ask(shared, adapters[k], t) for k, t in zip(order, texts, strict=True)]
    together = [f.result() for f in futures]
    assert decoder.prefills == prefills + 1  # one prefill, one batch: every row in it
    assert together == alone
    assert shared.model is shared.adapters.base_model  # one copy of the base, nothing merged
    assert sorted(shared.adapters.loaded) == sorted(ids.values())


def test_the_pool_unloads_the_least_recently_used_idle_adapter(ids, shared) -> None:
    adapters = refs(ids)
    expected = {k: ask(shared, adapters[k]).result() for k in ("A", "B")}
    one = get_shared_base("smollm2", batch_window_s=0.0, max_batch=8, max_adapters=1)
    pool = one.adapters
    assert ask(one, adapters["A"]).result() == expected["A"]
    assert pool.loaded == [ids["A"]]
    assert ask(one, adapters["B"]).result() == expected["B"]
    assert pool.loaded == [ids["B"]] and (pool.loads, pool.unloads) == (2, 1)

    # B has a row in flight: A may not evict B's adapter, so A waits until B's row is done.
    # (B's streaming callback runs on the decoder thread, between steps: it looks at the pool.)
    seen: list[tuple[list[str], int]] = []
    go = threading.Event()

    def watch(piece: str) -> None:
        go.wait(60)
        seen.append((pool.loaded, len(one.decoder._waiting)))

    b = ask(one, adapters["B"], on_text=watch)
    while one.decoder.in_flight == 0:
        time.sleep(0.01)
    a = ask(one, adapters["A"])
    time.sleep(0.2)  # A is in the queue
    go.set()
    assert b.result() == expected["B"]
    assert a.result() == expected["A"]
    assert seen and all(loaded == [ids["B"]] for loaded, _ in seen)
    assert any(waiting == 1 for _, waiting in seen)  # A was held back while B decoded
    assert pool.loaded == [ids["A"]] and pool.in_flight(ids["A"]) == 0
    assert (pool.loads, pool.unloads) == (3, 2)


def test_a_cancelled_row_leaves_the_batch_and_streaming_adds_up(ids, shared) -> None:
    adapters = refs(ids)
    doomed = ask(shared, adapters["B"], max_new_tokens=200, stop=())
    while shared.decoder.in_flight == 0:
        time.sleep(0.01)
    assert doomed.cancel()
    deadline = time.monotonic() + 60
    while shared.decoder.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    assert shared.decoder.in_flight == 0
    assert shared.adapters.in_flight(ids["B"]) == 0

    pieces: list[str] = []
    streamed: Generation = ask(shared, adapters["A"], on_text=pieces.append).result()
    assert len(pieces) > 2
    final = streamed.text
    assert final.startswith("".join(pieces))  # never a piece the stop string later cut
    assert "[[" not in "".join(pieces)[len("[[ ## sentiment ## ]]") :]


def test_a_missing_adapter_fails_its_own_request_only(ids, shared, tmp_path) -> None:
    broken = AdapterRef("bftweb:smollm2:ft-gone", tmp_path / "nothing")
    fine = ask(shared, refs(ids)["A"])
    with pytest.raises(FileNotFoundError, match="ft-gone"):
        ask(shared, broken).result()
    assert fine.result().text == "[[ ## sentiment ## ]]\npositive\n\n"


def test_streaming_holds_back_what_may_start_a_stop_string() -> None:
    assert _held_back("answer [[ ## comp", STOP) == len("[[ ## comp")
    assert _held_back("answer [", STOP) == 1
    assert _held_back("answer", STOP) == 0
    assert _held_back("caf\ufffd", ()) == 1
    assert _held_back("x\n\n", ("\n\n\n",)) == 2


def test_a_pool_needs_room_for_one_adapter() -> None:
    with pytest.raises(ValueError, match="at least one"):
        AdapterPool(object(), max_loaded=0)
