"""Demos chosen by measurement: stratified candidate sets, and a search that keeps the best.

The teacher in the search tests is a deterministic fake built on DSPy's DummyLM (its engine is
replaced): it answers the gold label only when its demos show every label, else the label its
demos show most. No model runs, so these tests are fast and exact.
"""

from __future__ import annotations

import re
from collections import Counter

from dspy.clients.engines.dummy_engine import AsyncDummyEngine, DummyEngine
from dspy.lm15 import Message, Response, TextPart, Usage
from dspy.utils.dummies import DummyLM

from jobs.engine.bootstrap import bootstrap_with_lm
from jobs.engine.demos import plan_demo_search, search_demos, stratified_demo_sets
from jobs.engine.types import BootstrapConfig, MetricSpec

METRIC = MetricSpec("exact_match", "sentiment")
LABEL = re.compile(r"\[\[ ## sentiment ## \]\]\s*(\w+)")


def label_rows(counts: dict[str, int]) -> list[dict]:
    return [
        {"text": f"{label} review {i}", "sentiment": label}
        for label, n in counts.items()
        for i in range(n)
    ]


def test_every_label_is_in_every_set_when_labels_are_few():
    rows = label_rows({"a": 20, "b": 3, "c": 2, "d": 1})
    sets = stratified_demo_sets(rows, "sentiment", 4, 5, seed=7)
    assert len(sets) == 5 and len({frozenset(s) for s in sets}) == 5  # distinct sets
    for demo_set in sets:
        assert len(demo_set) == 4 and len(set(demo_set)) == 4
        assert {rows[p]["sentiment"] for p in demo_set} == {"a", "b", "c", "d"}
    # more demos than labels: as even as the rows allow
    for demo_set in stratified_demo_sets(rows, "sentiment", 8, 3, seed=1):
        counts = Counter(rows[p]["sentiment"] for p in demo_set)
        assert set(counts) == {"a", "b", "c", "d"} and max(counts.values()) <= 3


def test_sets_cover_every_label_between_them_when_k_is_smaller():
    rows = label_rows({"a": 5, "b": 5, "c": 5, "d": 5, "e": 5, "f": 5})
    sets = stratified_demo_sets(rows, "sentiment", 2, 3, seed=0)
    for demo_set in sets:  # two different labels per set
        assert len({rows[p]["sentiment"] for p in demo_set}) == 2
    assert {rows[p]["sentiment"] for s in sets for p in s} == set("abcdef")


def test_sets_are_deterministic_by_seed_and_plain_samples_with_many_labels():
    rows = label_rows({"a": 6, "b": 6, "c": 6})
    assert stratified_demo_sets(rows, "sentiment", 3, 4, 3) == stratified_demo_sets(
        rows, "sentiment", 3, 4, 3
    )
    assert stratified_demo_sets(rows, "sentiment", 3, 4, 3) != stratified_demo_sets(
        rows, "sentiment", 3, 4, 4
    )
    many = [{"text": str(i), "score": i} for i in range(40)]  # 40 distinct gold values
    sets = stratified_demo_sets(many, "score", 4, 3, 0)
    assert [len(s) for s in sets] == [4, 4, 4]
    assert stratified_demo_sets(many, "score", 0, 3, 0) == []
    assert len(stratified_demo_sets(rows[:2], "sentiment", 4, 3, 0)) == 1  # only one exists


def test_the_held_sample_is_never_a_demo():
    rows = label_rows({"positive": 10, "negative": 10})
    candidates, sample = plan_demo_search(
        rows, "sentiment", k=4, n_candidates=4, n_sample=6, seed=0
    )
    assert len(sample) == 6 and len(candidates) == 4
    assert Counter(rows[p]["sentiment"] for p in sample) == {"positive": 3, "negative": 3}
    assert not set(sample) & {p for c in candidates for p in c}
    # too few rows to hold any back: one stratified set, no sample
    candidates, sample = plan_demo_search(
        rows[8:12], "sentiment", k=4, n_candidates=4, n_sample=6, seed=0
    )
    assert sample == [] and len(candidates) == 1


class LabelCoverageLM(DummyLM):
    """A fake teacher: the gold label when its demos show every label, else its demos' most shown
    label (what a small teacher whose demos miss a label was seen to do)."""

    def __init__(self, rows: list[dict], labels: set[str]) -> None:
        super().__init__({})
        self.gold = {row["text"]: row["sentiment"] for row in rows}
        self.labels = labels
        lm = self

        class Engine(DummyEngine):
            def _complete_messages(self, messages):
                shown = [
                    m
                    for message in messages[1:-1]
                    if message["role"] == "assistant"
                    for m in LABEL.findall(message["content"])
                ]
                text = next(t for t in lm.gold if t in messages[-1]["content"])
                if set(shown) >= lm.labels:
                    answer = lm.gold[text]
                else:
                    answer = Counter(shown).most_common(1)[0][0] if shown else "none"
                output = lm._format_answer_fields({"reasoning": "r", "sentiment": answer})
                return Response(
                    id=None,
                    model="dummy",
                    message=Message.assistant([TextPart(output)]),
                    finish_reason="stop",
                    usage=Usage(input_tokens=0, output_tokens=0, total_tokens=0),
                )

        self._engine_spec = Engine(self)
        self._async_engine_spec = AsyncDummyEngine(self._engine_spec)


def test_the_search_keeps_the_set_that_scores_best(demo_spec):
    rows = label_rows({"positive": 6, "negative": 6})
    lm = LabelCoverageLM(rows, {"positive", "negative"})
    only_positive = [0, 1]
    both = [2, 8]
    sample = [4, 5, 10, 11]  # two of each label
    search = search_demos(
        program=demo_spec,
        lm=lm,
        rows=rows,
        candidates=[only_positive, both],
        sample=sample,
        metric=METRIC,
        threads=2,
    )
    assert [c.passed for c in search.candidates[:2]] == [2, 4]
    assert [c.score for c in search.candidates[:2]] == [0.5, 1.0]
    # the best (index 1) is tried in another order; equal, so the first one stays chosen
    assert search.candidates[2].reordered_from == 1
    assert search.candidates[2].demos == (8, 2)
    assert search.chosen == 1 and search.chosen_demos == (2, 8)
    assert search.lm_calls == 12  # 3 sets x 4 sample rows x 1 module
    data = search.to_dict()
    assert data["candidates"][0]["labels"] == ["positive", "positive"]
    assert data["chosen"] == 1 and data["sample"] == sample


def test_bootstrap_gives_the_teacher_the_chosen_demos(demo_spec):
    rows = label_rows({"positive": 12, "negative": 2})  # random demos would often miss one
    lm = LabelCoverageLM(rows, {"positive", "negative"})
    examples = [{"index": i, "data": row} for i, row in enumerate(rows)]
    searches, records = [], []
    config = BootstrapConfig(
        num_threads=2, num_demos=2, demo_strategy="stratified_search", demo_search_rows=4
    )
    summary = bootstrap_with_lm(
        program=demo_spec,
        lm=lm,
        examples=examples,
        metric=METRIC,
        config=config,
        demos=rows,
        on_trace=records.append,
        on_demo_search=searches.append,
    )
    (search,) = searches
    assert {rows[p]["sentiment"] for p in search.chosen_demos} == {"positive", "negative"}
    assert not set(search.sample) & set(search.chosen_demos)
    assert summary.passed == len(rows)
    demos = records[0]["calls"][0]["demos"]
    assert [d["text"] for d in demos] == [rows[p]["text"] for p in search.chosen_demos]

    # Given demo positions (a resumed run), no search runs and those demos are used in order.
    again, records = [], []
    bootstrap_with_lm(
        program=demo_spec,
        lm=lm,
        examples=examples[:1],
        metric=METRIC,
        config=config,
        demos=rows,
        on_trace=records.append,
        on_demo_search=again.append,
        demo_positions=[13, 0],
    )
    assert again == []
    assert [d["text"] for d in records[0]["calls"][0]["demos"]] == [
        rows[13]["text"],
        rows[0]["text"],
    ]


def test_the_config_keeps_its_stored_shape_for_random_demos():
    random_demos = BootstrapConfig(num_demos=4)
    assert "demo_strategy" not in random_demos.to_dict()  # stored as before this option
    assert BootstrapConfig.from_dict(random_demos.to_dict()) == random_demos
    searched = BootstrapConfig(num_demos=4, demo_strategy="stratified_search", demo_candidates=3)
    assert searched.to_dict()["demo_candidates"] == 3
    assert BootstrapConfig.from_dict(searched.to_dict()) == searched
