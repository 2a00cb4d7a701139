"""QA scoring on hand-made answers and references."""

from __future__ import annotations

import pytest

from genrun.scoring import accuracy, exact_match, f1, normalize, score, strip_thinking


def test_normalization_drops_case_punctuation_articles_and_space() -> None:
    assert normalize("  The  Eiffel Tower, in PARIS! ") == "eiffel tower in paris"


@pytest.mark.parametrize("answer,reference,em,f,acc", [
    ("Paris", "paris", 1.0, 1.0, 1.0),
    ("The capital is Paris.", "Paris", 0.0, 0.5, 1.0),
    ("London", "Paris", 0.0, 0.0, 0.0),
    ("x b c", "b c d", 0.0, 2 / 3, 0.0),
])
def test_single_reference(answer, reference, em, f, acc) -> None:
    assert exact_match(answer, reference) == em
    assert f1(answer, reference) == pytest.approx(f)
    assert accuracy(answer, reference) == acc


def test_best_over_a_list_of_references() -> None:
    scores = score("It has 8 legs", ["eight", "8"])
    assert scores == {"exact_match": 0.0, "f1": pytest.approx(0.4), "accuracy": 1.0}
    assert score("eight", ["8", "Eight"])["exact_match"] == 1.0


def test_thinking_is_removed_before_scoring() -> None:
    assert score("<think>maybe London?</think>Paris", "Paris")["exact_match"] == 1.0
    assert score("maybe London?</think>\n\nParis", "Paris")["exact_match"] == 1.0  # pre-filled <think>
    unclosed = score("Paris<think>still thinking about London", "London")
    assert unclosed["unclosed_thinking"] is True and unclosed["accuracy"] == 0.0
    assert strip_thinking("no thinking here") == ("no thinking here", False)


def test_metric_choice_and_empty_reference() -> None:
    assert set(score("Paris", "Paris", ["f1"])) == {"f1"}
    assert score("anything", [])["accuracy"] == 0.0
    assert accuracy("anything", "") == 0.0
