"""The comparison of evaluation candidates (jobs/engine/comparison.py): statistics, summaries,
paired tests and row filters, on hand-made results with hand-computed expectations. No database.
"""

from __future__ import annotations

import json

import pytest

from jobs.engine.comparison import (
    CandidateInfo,
    ResultRow,
    answer_key,
    compare,
    confusion_matrix,
    disagreement_rows,
    format_p,
    mcnemar_exact,
    mean_interval,
    paired_test,
    percentile,
    ratio_words,
    row_order,
    summarize,
    wilson_interval,
)

TEACHER = CandidateInfo("t", "teacher: big", "teacher")
BASE = CandidateInfo("b", "base student: small", "base")
STUDENT = CandidateInfo("s", "fine-tuned student: small", "student")


def results(passes: str, **fields) -> list[ResultRow]:
    """One row per character of ``passes`` ("1" passed), rows numbered from 0; ``fields`` set
    the same value on every row, or one per row when given a list."""
    rows = []
    for i, mark in enumerate(passes):
        values = {k: v[i] if isinstance(v, list) else v for k, v in fields.items()}
        rows.append(ResultRow(i, float(mark == "1"), mark == "1", **values))
    return rows


def test_mcnemar_exact_known_values():
    assert mcnemar_exact(1, 3) == pytest.approx(0.625)
    assert mcnemar_exact(3, 1) == pytest.approx(0.625)
    assert mcnemar_exact(0, 5) == pytest.approx(0.0625)
    assert mcnemar_exact(2, 2) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    # 2 * (C(20,0) + C(20,1) + C(20,2) + C(20,3)) / 2**20 = 2 * 1351 / 1048576
    assert mcnemar_exact(3, 17) == pytest.approx(0.0025768, abs=1e-7)


def test_wilson_interval_against_hand_computed_values():
    # p = 29/32, z = 1.96: center (p + z²/64) / (1 + z²/32) = 0.86271, half-width 0.10489
    low, high = wilson_interval(29, 32)
    assert low == pytest.approx(0.75782, abs=1e-5)
    assert high == pytest.approx(0.96760, abs=1e-5)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


def test_mean_interval_is_normal_and_clipped():
    # mean 0.75, sample sd 0.5, half-width 1.96 * 0.5 / 2 = 0.49; the top is clipped at 1
    mean, low, high = mean_interval([1.0, 0.0, 1.0, 1.0])
    assert (mean, low, high) == pytest.approx((0.75, 0.26, 1.0))
    assert mean_interval([0.4]) == (0.4, 0.0, 1.0)
    assert mean_interval([]) == (0.0, 0.0, 1.0)


def test_percentile_interpolates_like_numpy():
    assert percentile([4, 1, 3, 2], 50) == pytest.approx(2.5)
    assert percentile([1, 2, 3, 4], 95) == pytest.approx(3.85)  # position 2.85
    assert percentile([10, 20, 30, 40, 50], 90) == pytest.approx(46.0)
    assert percentile([1, 2, 3, 4], 0) == 1 and percentile([1, 2, 3, 4], 100) == 4
    assert percentile([7.5], 95) == 7.5
    assert percentile([], 50) is None


def test_answer_key_folds_case_and_spacing_only():
    assert answer_key("  Sports\n  News ") == "sports news"
    assert answer_key("Sci/Tech") == "sci/tech"
    assert answer_key(None) == ""
    assert answer_key(3) == "3"
    assert answer_key(["A", "b"]) == "a, b"


def test_result_row_from_a_stored_result():
    stored = {
        "row_index": 4,
        "score": 1.0,
        "passed": True,
        "parsed": True,
        "latency_s": 0.25,
        "tokens_in": 120,
        "tokens_out": 7,
        "outputs": {"topic": "Sports", "reasoning": "..."},
        "labels": {"topic": "sports"},
    }
    row = ResultRow.from_dict(stored, "topic")
    assert row == ResultRow(4, 1.0, True, True, 0.25, 120, 7, "Sports", "sports")
    unparsed = ResultRow.from_dict({**stored, "parsed": False, "outputs": {}}, "topic")
    assert unparsed.answer is None and unparsed.gold == "sports" and not unparsed.parsed


def test_a_collapsed_candidate_gets_the_warning():
    answers = ["sports"] * 30 + ["world", "business"]
    summary = summarize(STUDENT, results("1" * 32, answer=answers))
    assert summary.dominant == ("sports", pytest.approx(30 / 32))
    assert summary.collapsed
    assert summary.warning == (
        "answers 'sports' for 30 of 32 rows (94 %): the model may have collapsed to one label"
    )
    assert summary.answers[:2] == (("sports", 30), ("business", 1))


def test_shares_count_parsed_answers_only():
    answers = ["Sports"] * 28 + ["world"] + [None] * 3
    rows = results("1" * 32, answer=answers, parsed=[True] * 29 + [False] * 3)
    summary = summarize(STUDENT, rows)
    assert summary.parse_failures == 3
    assert summary.warning == (
        "answers 'sports' for 28 of 29 parsed answers (97 %): "
        "the model may have collapsed to one label"
    )


def test_balanced_or_few_answers_do_not_collapse():
    balanced = summarize(STUDENT, results("1" * 32, answer=["a", "b", "c", "d"] * 8))
    assert balanced.dominant is None and not balanced.collapsed and balanced.warning is None
    assert balanced.answers == (("a", 8), ("b", 8), ("c", 8), ("d", 8))
    few = summarize(STUDENT, results("1111", answer="a"))  # 4 answers: too few to tell
    assert not few.collapsed


def test_summary_numbers_and_cost():
    priced = CandidateInfo("t", "teacher: big", "teacher", 1e-6, 2e-6)
    rows = results("1101", latency_s=[1.0, 2.0, 3.0, 4.0], tokens_in=100, tokens_out=10)
    summary = summarize(priced, rows)
    assert (summary.n, summary.passed, summary.pass_rate) == (4, 3, 0.75)
    assert summary.score_mean == 0.75
    assert summary.latency_p50 == pytest.approx(2.5)
    assert summary.latency_p95 == pytest.approx(3.85)
    assert (summary.tokens_in_per_example, summary.tokens_out_per_example) == (100.0, 10.0)
    # 1000 * (100 * 1e-6 + 10 * 2e-6)
    assert summary.cost_per_1000 == pytest.approx(0.12)
    half_priced = CandidateInfo("t", "teacher: big", "teacher", 1e-6, None)
    assert summarize(half_priced, rows).cost_per_1000 is None
    assert summarize(TEACHER, rows).cost_per_1000 is None
    data = summary.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["pass_ci"] == list(wilson_interval(3, 4)) and data["collapsed"] is False


def test_confusion_matrix_counts_other_and_unparsed():
    gold = ["a", "a", "a", "b", "b", "b"]
    answers = ["a", "b", " A ", "b", "c", None]
    parsed = [True, True, True, True, True, False]
    matrix = confusion_matrix(results("101100", answer=answers, gold=gold, parsed=parsed))
    assert matrix is not None
    assert matrix.labels == ("a", "b")
    assert matrix.columns == ("a", "b", "(other)")
    assert matrix.rows == ((2, 1, 0), (0, 1, 2))
    assert matrix.to_dict()["rows"] == [[2, 1, 0], [0, 1, 2]]


def test_no_confusion_matrix_without_classification():
    distinct = results("1111", answer="x", gold=["w", "x", "y", "z"])  # no gold value repeats
    assert confusion_matrix(distinct) is None
    many = results("1" * 26, gold=[chr(97 + i % 13) for i in range(26)])  # 13 labels
    assert confusion_matrix(many) is None
    assert confusion_matrix(many, max_labels=13) is not None
    assert confusion_matrix([]) is None


def test_paired_words_not_yet_significant():
    # both fail row 0; the teacher also fails rows 1 and 2: only_a 2, only_b 0, p = 2/4
    test = paired_test(STUDENT, results("0" + "1" * 31), TEACHER, results("000" + "1" * 29))
    assert (test.n, test.a_passed, test.b_passed, test.only_a, test.only_b) == (32, 31, 29, 2, 0)
    assert test.points == pytest.approx(6.25)
    assert test.p == 0.5 and not test.significant
    assert test.words == "student 31/32 vs teacher 29/32, +6 points, p = 0.5: not yet significant"


def test_paired_words_significantly_better_and_worse():
    test = paired_test(STUDENT, results("1" * 20), TEACHER, results("111" + "0" * 17))
    assert test.significant and test.p == pytest.approx(2 / 2**17)
    assert (
        test.words == "student 20/20 vs teacher 3/20, +85 points, p < 0.001: significantly better"
    )
    worse = paired_test(BASE, results("111" + "0" * 17), TEACHER, results("1" * 20))
    assert worse.points == pytest.approx(-85.0)
    assert worse.words == "base 3/20 vs teacher 20/20, -85 points, p < 0.001: significantly worse"


def test_paired_words_same_rows_and_matching_by_row():
    same = paired_test(STUDENT, results("0111"), TEACHER, results("0111"))
    assert same.words == "student 3/4 vs teacher 3/4: the same rows pass" and same.p == 1.0
    # a plain model is named by its label; rows only one side answered are left out
    model = CandidateInfo("m", "gpt-x (zero-shot)", "model")
    test = paired_test(model, results("110111"), TEACHER, results("1011"))
    assert (test.n, test.only_a, test.only_b) == (4, 1, 1)
    assert (
        test.words == "gpt-x (zero-shot) 3/4 vs teacher 3/4, 0 points, p = 1: not yet significant"
    )
    empty = paired_test(STUDENT, [], TEACHER, results("1"))
    assert empty.n == 0 and empty.points == 0.0 and not empty.significant


def test_format_p():
    assert format_p(0.5) == "p = 0.5"
    assert format_p(0.03125) == "p = 0.031"
    assert format_p(0.0009) == "p < 0.001"
    assert format_p(1.0) == "p = 1"


def test_ratio_words():
    teacher = summarize(
        CandidateInfo("t", "teacher: big", "teacher", 1e-6, 2e-6),
        results("11", latency_s=2.1, tokens_in=1000, tokens_out=100),  # 1.2 per 1000
    )
    fast = summarize(
        CandidateInfo("s", "student", "student", 1e-6, 2e-6),
        results("11", latency_s=0.5, tokens_in=100, tokens_out=0),  # 0.1 per 1000
    )
    assert ratio_words(fast, teacher) == [
        "×4.2 faster than the teacher",
        "×12 cheaper than the teacher",
    ]
    slow = summarize(STUDENT, results("11", latency_s=6.51))  # no prices: no cost words
    assert ratio_words(slow, teacher) == ["×3.1 slower than the teacher"]
    assert ratio_words(summarize(STUDENT, []), teacher) == []


def test_disagreement_filters_and_row_order():
    by_key = {"a": results("1100"), "b": results("10100")}  # b also answered row 4
    assert disagreement_rows(by_key, "a", "b", "disagree") == [1, 2]
    assert disagreement_rows(by_key, "a", "b", "a_wrong_b_right") == [2]
    assert disagreement_rows(by_key, "a", "b", "a_right_b_wrong") == [1]
    assert disagreement_rows(by_key, "a", "b", "both_wrong") == [3]
    assert disagreement_rows(by_key, "a", "b", "all") == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="unknown kind"):
        disagreement_rows(by_key, "a", "b", "sideways")
    assert row_order(by_key) == [1, 2, 0, 3, 4]


def test_compare_teacher_base_student():
    gold = ["pos", "neg"] * 4
    by_key = {
        # the teacher misses row 7; the base answers "pos" everywhere; the student's row 3 did
        # not parse
        "t": results(
            "11111110", answer=["pos", "neg"] * 3 + ["pos", "pos"], gold=gold, latency_s=2.0
        ),
        "b": results("10101010", answer="pos", gold=gold, latency_s=0.5),
        "s": results(
            "11101111",
            answer=gold[:3] + [None] + gold[4:],
            parsed=[True] * 3 + [False] + [True] * 4,
            gold=gold,
            latency_s=0.5,
        ),
    }
    comparison = compare([TEACHER, BASE, STUDENT], by_key)
    assert [s.key for s in comparison.summaries] == ["t", "b", "s"]
    assert comparison.reference == "t"
    assert set(comparison.paired) == {"b", "s"}
    assert comparison.paired["s"].words == (
        "student 7/8 vs teacher 7/8, 0 points, p = 1: not yet significant"
    )
    # only_a 0, only_b 3 (rows 1, 3, 5): p = 2/8
    assert comparison.paired["b"].words == (
        "base 4/8 vs teacher 7/8, -38 points, p = 0.25: not yet significant"
    )
    assert comparison.ratios["s"] == ["×4.0 faster than the teacher"]
    assert comparison.confusion["b"].rows == ((0, 4, 0), (0, 4, 0))
    assert comparison.confusion["s"].rows == ((3, 0, 1), (0, 4, 0))
    assert row_order(by_key) == [1, 3, 5, 7, 0, 2, 4, 6]
    assert comparison.verdict() == {
        "candidates": [
            {
                "key": "t",
                "label": "teacher: big",
                "role": "teacher",
                "n": 8,
                "passed": 7,
                "score": 0.875,
                "collapsed": False,
            },
            {
                "key": "b",
                "label": "base student: small",
                "role": "base",
                "n": 8,
                "passed": 4,
                "score": 0.5,
                "collapsed": True,
            },
            {
                "key": "s",
                "label": "fine-tuned student: small",
                "role": "student",
                "n": 8,
                "passed": 7,
                "score": 0.875,
                "collapsed": False,
            },
        ],
        "student_vs_teacher": "student 7/8 vs teacher 7/8, 0 points, p = 1: not yet significant",
    }
    data = comparison.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["summaries"][1]["warning"].startswith("answers 'pos' for 8 of 8 rows (100 %)")


def test_compare_without_a_teacher_or_results():
    comparison = compare([BASE, STUDENT], {"b": results("10")})
    assert comparison.reference is None and comparison.paired == {} and comparison.ratios == {}
    assert comparison.summaries[1].n == 0 and comparison.summaries[1].latency_p50 is None
    assert comparison.verdict()["student_vs_teacher"] is None
