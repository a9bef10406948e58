"""The generation metrics (exact_match, token_f1, rouge_l) against hand-computed values, and the
most-frequent-answer baseline."""

from __future__ import annotations

import pytest

from peftbench.plugin.metrics import baseline_metrics, compute_metrics, load_metric, metric


def test_exact_match_strips_and_optionally_ignores_case():
    predictions, references = [" 18 ", "Rome", "rome", "7"], ["18", "Rome", "Rome", "8"]
    assert compute_metrics(("exact_match",), predictions, references) == {"exact_match": 0.5}
    folded = load_metric("exact_match").compute(
        predictions=predictions, references=references, ignore_case=True
    )
    assert folded == {"exact_match": 0.75}


def test_token_f1_is_squad_bag_of_tokens_f1_averaged():
    predictions = [
        "The cat sat.",  # -> cat sat vs cat sat on mat: P 1, R 1/2, F1 2/3
        "a big red dog",  # -> big red dog vs red dog red: shared red, dog: P 2/3, R 2/3
        "nothing shared",
        "the",  # no tokens left, reference neither: 1 (SQuAD v2's convention)
        "an",  # no tokens left, reference has some: 0
    ]
    references = ["the cat sat on the mat", "Red dog, red!", "at all", "A", "word"]
    expected = (2 / 3 + 2 / 3 + 0 + 1 + 0) / 5
    values = compute_metrics(("token_f1",), predictions, references)
    assert values["token_f1"] == pytest.approx(expected)


def test_token_f1_counts_repeated_tokens_once_per_match():
    # prediction "red red red" vs reference "red": shared 1, P 1/3, R 1, F1 1/2
    values = compute_metrics(("token_f1",), ["red red red"], ["red"])
    assert values["token_f1"] == pytest.approx(0.5)


def test_rouge_l_is_the_lcs_f_measure_averaged():
    # "the cat sat on the mat" vs "the cat on mat": LCS "the cat on mat" = 4 tokens of 6 and 4:
    # P 4/4, R 4/6, F 0.8. "b a" vs "a b": LCS 1, P R 1/2, F 1/2. Case and punctuation ignored.
    values = compute_metrics(
        ("rouge_l",), ["The cat on mat.", "b a", "x"], ["the cat sat on the mat", "a b", "y"]
    )
    assert values["rouge_l"] == pytest.approx((0.8 + 0.5 + 0.0) / 3)


@pytest.mark.parametrize("name", ["exact_match", "token_f1", "rouge_l"])
def test_generation_metrics_rank_up_from_zero_to_one(name):
    declared = metric(name)
    assert declared.higher_is_better and (declared.best, declared.worst) == (1.0, 0.0)
    assert compute_metrics((name,), ["same words"], ["same words"]) == {name: 1.0}


@pytest.mark.parametrize("name", ["exact_match", "token_f1", "rouge_l"])
def test_an_empty_set_is_an_error(name):
    with pytest.raises(ValueError, match="empty"):
        compute_metrics((name,), [], [])


def test_baseline_answers_the_most_frequent_training_reference():
    train = ["12", "7", "12", "3"]
    references = ["12", "5", "12", "7"]
    assert baseline_metrics(("exact_match",), train, references) == {"exact_match": 0.5}


def test_baseline_breaks_ties_by_first_occurrence():
    # "b" and "a" are both seen twice; "b" first: the baseline answers "b" whatever the hash seed
    train = ["b", "a", "a", "b"]
    assert baseline_metrics(("exact_match",), train, ["b", "c"]) == {"exact_match": 0.5}
    assert baseline_metrics(("exact_match",), train[1:], ["b", "c"]) == {"exact_match": 0.0}


def test_baseline_scores_every_metric_of_the_constant_answer():
    values = baseline_metrics(
        ("exact_match", "token_f1"), ["red dog", "red dog", "cat"], ["red dog", "big red cat"]
    )
    # "red dog" vs "big red cat": shared red, P 1/2, R 1/3, F1 2/5
    assert values == pytest.approx({"exact_match": 0.5, "token_f1": (1 + 0.4) / 2})


def test_baseline_of_an_empty_training_split_is_an_error():
    with pytest.raises(ValueError, match="empty training split"):
        baseline_metrics(("exact_match",), [], ["a"])
