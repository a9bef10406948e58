"""Statistics (reporting/stats.py) against hand-computed values, and the predictions files
(harness/peftbench/records/predictions.py) they read."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import matthews_corrcoef

from peftbench.plugin import metrics
from peftbench.records.predictions import (
    PREDICTIONS_FILE,
    PredictionsError,
    predictions_beside,
    read_predictions,
    write_predictions,
)
from peftbench.reporting.aggregate import above_chance_p
from peftbench.reporting.stats import (
    CellPredictions,
    bootstrappable,
    cell_resamples,
    compare,
    efficiency,
    friedman_nemenyi,
    holm,
    is_proportion,
    mcnemar_exact,
    metric_value,
    paired_bootstrap,
    pairwise,
    percentile_interval,
    versus_leader,
    wilson_interval,
)


def cell(predictions: list[list[int]], references: list[int], metric="accuracy", seeds=None):
    rows = np.asarray(predictions)
    return CellPredictions(
        metric,
        tuple(seeds or range(len(rows))),
        rows,
        np.asarray(references),
        np.arange(len(references)),
    )


def test_mcnemar_exact_is_the_binomial_test_of_the_discordant_pairs():
    references = np.zeros(20, dtype=int)
    a = np.array([0] * 8 + [1] * 2 + [0] * 5 + [1] * 5)  # right on 8 + 5
    b = np.array([1] * 8 + [0] * 2 + [0] * 5 + [1] * 5)  # right on 2 + 5
    # 8 only A right, 2 only B right: p = 2 · P(X ≤ 2 | 10, 1/2) = 2 · (1 + 10 + 45) / 1024.
    assert mcnemar_exact(a, b, references) == (8, 2, pytest.approx(112 / 1024))
    assert mcnemar_exact(b, a, references)[2] == pytest.approx(112 / 1024)
    assert mcnemar_exact(a, a, references) == (0, 0, 1.0)


def test_wilson_interval_of_8_out_of_10():
    # (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), z = 1.96: [0.4902, 0.9433].
    low, high = wilson_interval(0.8, 10)
    assert (low, high) == (pytest.approx(0.49016, abs=1e-4), pytest.approx(0.94332, abs=1e-4))


def test_bootstrap_interval_of_an_accuracy_matches_its_binomial_standard_error():
    references = np.zeros(400, dtype=int)
    predictions = np.array([0] * 320 + [1] * 80)  # accuracy 0.8, se sqrt(0.8 · 0.2 / 400) = 0.02
    resampled = cell_resamples("accuracy", predictions, references)
    low, high = percentile_interval(resampled)
    assert resampled.std() == pytest.approx(0.02, rel=0.1)
    assert low == pytest.approx(0.8 - 1.96 * 0.02, abs=0.006)
    assert high == pytest.approx(0.8 + 1.96 * 0.02, abs=0.006)
    assert np.array_equal(resampled, cell_resamples("accuracy", predictions, references))


def test_bootstrap_of_two_examples_follows_the_multinomial():
    # One of two examples right: a resample holds it 0, 1 or 2 times (1/4, 1/2, 1/4).
    resampled = cell_resamples("accuracy", np.array([0, 1]), np.array([0, 0]), resamples=4000)
    shares = [np.mean(resampled == v) for v in (0.0, 0.5, 1.0)]
    assert shares == pytest.approx([0.25, 0.5, 0.25], abs=0.03)
    assert percentile_interval(np.array([0.7] * 10)) == (0.7, 0.7)


def test_seeds_add_their_spread_to_the_interval():
    references = np.zeros(1000, dtype=int)
    one = (np.arange(1000) >= 600).astype(int)  # accuracy 0.6
    other = (np.arange(1000) >= 800).astype(int)  # accuracy 0.8
    alone = percentile_interval(cell_resamples("accuracy", one, references))
    both = cell_resamples("accuracy", np.stack([one, other]), references)
    low, high = percentile_interval(both)
    # Drawing two seeds with replacement: both 0.6, one of each, or both 0.8 (1/4, 1/2, 1/4).
    assert low == pytest.approx(0.6, abs=0.03) and high == pytest.approx(0.8, abs=0.03)
    assert high - low > 3 * (alone[1] - alone[0])


def test_matthews_correlation_agrees_with_sklearn():
    rng = np.random.default_rng(1)
    references = rng.integers(0, 4, 300)
    predictions = np.where(rng.random(300) < 0.6, references, rng.integers(0, 4, 300))
    assert metric_value("matthews_correlation", predictions, references) == pytest.approx(
        matthews_corrcoef(references, predictions)
    )
    constant = np.zeros(300, dtype=int)
    assert metric_value("matthews_correlation", constant, references) == 0.0
    assert metric_value("accuracy", predictions, references) == np.mean(predictions == references)


def test_paired_bootstrap_of_one_differing_example():
    # A is right on one example B gets wrong: d* is 0 when a resample misses that example,
    # which happens with probability (1 - 1/10)^10 = 0.349, so p ≈ 2 · 0.349.
    references = np.zeros(10, dtype=int)
    b = np.array([1] + [0] * 9)
    a = np.zeros(10, dtype=int)
    assert paired_bootstrap("accuracy", a, b, references) == pytest.approx(2 * 0.9**10, abs=0.05)
    # A is right on every example B gets wrong: no resample reverses it.
    assert paired_bootstrap("accuracy", a, np.ones(10, dtype=int), references) == pytest.approx(
        2 / 2001
    )


@pytest.mark.parametrize("metric", ["accuracy", "matthews_correlation"])
def test_identical_predictions_are_never_significant(metric):
    rng = np.random.default_rng(2)
    references = rng.integers(0, 2, 200)
    rows = [np.where(rng.random(200) < 0.7, references, 1 - references) for _ in range(3)]
    a, b = cell(rows, references, metric), cell(rows, references, metric)
    for seed in (0, 1, 2, None):
        assert compare(a, b, seed).p_value == 1.0
    frame = pairwise({("t", "a", "m"): a, ("t", "b", "m"): b})
    assert len(frame) == 4 and (frame["p_value"] == 1.0).all()
    assert not frame["distinguishable"].any()


def test_compare_picks_mcnemar_for_one_seed_of_accuracy_and_the_bootstrap_otherwise():
    references = np.zeros(50, dtype=int)
    good = np.zeros(50, dtype=int)
    bad = np.array([1] * 30 + [0] * 20)
    a, b = cell([good, good], references), cell([bad, bad], references)
    one = compare(a, b, seed=0)
    assert (one.test, one.discordant, one.difference) == ("McNemar exact", (30, 0), 0.6)
    assert one.p_value == pytest.approx(2 * 0.5**30)
    across = compare(a, b)
    assert (across.test, across.seeds) == ("paired bootstrap", 2)
    assert across.p_value == pytest.approx(2 / 2001)
    mixed = np.arange(50) % 2
    mcc = compare(
        cell([mixed], mixed, "matthews_correlation"), cell([bad], mixed, "matthews_correlation")
    )
    assert (mcc.test, mcc.score_a) == ("paired bootstrap", 1.0) and mcc.p_value < 0.01
    with pytest.raises(ValueError, match="same validation examples"):
        compare(a, cell([good], np.ones(50, dtype=int)))


def test_exact_match_files_are_proportions_recomputed_and_compared_like_accuracy():
    """A generation run's predictions file: 1/0 exact matches against references all 1."""
    references = np.ones(40, dtype=int)
    a = np.array([1] * 30 + [0] * 10)  # 30 of 40 right
    b = np.array([1] * 18 + [0] * 22)  # 18 of 40 right, all among A's
    assert metric_value("exact_match", a, references) == pytest.approx(0.75)
    one = compare(cell([a], references, "exact_match"), cell([b], references, "exact_match"))
    assert (one.test, one.discordant) == ("McNemar exact", (12, 0))
    assert one.p_value == pytest.approx(2 * 0.5**12)
    resampled = cell_resamples("exact_match", a, references)
    low, high = percentile_interval(resampled)
    assert low < 0.75 < high and resampled.std() == pytest.approx(
        math.sqrt(0.75 * 0.25 / 40), rel=0.1
    )


def test_a_registered_proportion_metric_gets_the_statistics_of_accuracy(monkeypatch):
    """The kind declared on the metric drives the statistics: no list names it."""
    monkeypatch.setitem(metrics.METRICS, "my_acc", None)  # removed after the test
    metrics.register_metric("my_acc", True, best=1.0, worst=0.0, kind="proportion")
    assert is_proportion("my_acc") and bootstrappable("my_acc")
    references = np.zeros(40, dtype=int)
    a, b = np.array([0] * 30 + [1] * 10), np.array([0] * 18 + [1] * 22)
    for name in ("my_acc", "accuracy"):
        one = compare(cell([a], references, name), cell([b], references, name))
        assert (one.test, one.discordant) == ("McNemar exact", (12, 0))
    assert np.array_equal(
        cell_resamples("my_acc", a, references), cell_resamples("accuracy", a, references)
    )
    p = above_chance_p(*(pd.Series([v, v]) for v in (0.75, 0.5, 40)), pd.Series(["my_acc", "x"]))
    assert p[0] == pytest.approx(0.00111, abs=1e-5) and math.isnan(p[1])
    # Declared without a kind: continuous, so no interval and no test.
    monkeypatch.setitem(metrics.METRICS, "my_score", None)
    metrics.register_metric("my_score", True, best=1.0, worst=0.0)
    assert not is_proportion("my_score") and not bootstrappable("my_score")
    with pytest.raises(ValueError, match="'my_score' is not computed from confusion matrices"):
        cell_resamples("my_score", a, references)


def test_holm_by_hand():
    # Sorted 0.01, 0.03, 0.04 times 3, 2, 1: 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06.
    adjusted, reject = holm(pd.Series([0.01, 0.04, 0.03], index=["x", "y", "z"]))
    assert adjusted.tolist() == pytest.approx([0.03, 0.06, 0.06])
    assert reject.tolist() == [True, False, False]


def test_versus_leader_corrects_over_the_rows_compared():
    references = np.zeros(40, dtype=int)
    leader = cell([np.zeros(40, dtype=int)], references)
    close = cell([np.array([1] * 2 + [0] * 38)], references)
    far = cell([np.array([1] * 20 + [0] * 20)], references)
    table = versus_leader(leader, {"close": close, "far": far, "none": None})
    assert table.at["close", "p_value"] == pytest.approx(0.5)  # 2 only-leader-right: 2 · 1/4
    assert table.at["close", "p_holm"] == pytest.approx(0.5)
    assert table.at["far", "p_holm"] == pytest.approx(2 * 2 * 0.5**20)
    assert table["distinguishable"].tolist()[:2] == [False, True]
    assert math.isnan(table.at["none", "p_value"])
    assert versus_leader(None, {"far": far})["p_value"].isna().all()


def test_friedman_nemenyi_by_hand():
    # Four blocks, always a > b > c: ranks 1, 2, 3; chi² = 12·4/(3·4)·(1+4+9) − 3·4·4 = 8,
    # p = exp(−8/2); CD = q(0.05, 3)/√2 · sqrt(3·4/(6·4)) = 2.3437 · 0.7071.
    scores = pd.DataFrame(
        {"a": [0.9, 0.8, 0.7, 0.95], "b": [0.5, 0.6, 0.6, 0.9], "c": [0.1, 0.2, 0.3, 0.5]}
    )
    scores.loc[4] = [0.9, np.nan, 0.1]  # incomplete block: dropped
    ranking = friedman_nemenyi(scores)
    assert ranking.ranks.to_dict() == {"a": 1.0, "b": 2.0, "c": 3.0}
    assert ranking.p_value == pytest.approx(math.exp(-4))
    assert ranking.critical_difference == pytest.approx(2.3437 * math.sqrt(0.5), abs=1e-3)
    assert (ranking.blocks, ranking.dropped) == (4, 1)
    assert ranking.nemenyi.at["a", "c"] < 0.05 < ranking.nemenyi.at["a", "b"]
    assert friedman_nemenyi(scores[["a", "b"]]) is None  # fewer than three methods


def test_efficiency_is_normalised_score_per_decade_of_trainable_parameters():
    result = efficiency(pd.Series([0.6, 0.8, 0.5, np.nan]), pd.Series([1000, 1e6, 5, 1e4]))
    assert result.iloc[:2].tolist() == pytest.approx([0.2, 0.8 / 6])
    assert result.iloc[2:].isna().all()


def test_predictions_round_trip(tmp_path):
    path = write_predictions(tmp_path / "run", "m/x/t/default/seed0", [1, 0, 2], [1, 1, 2])
    assert path == tmp_path / "run" / PREDICTIONS_FILE
    assert [p.name for p in path.parent.iterdir()] == [PREDICTIONS_FILE]  # no temporary left
    kept = read_predictions(path)
    assert kept.run_id == "m/x/t/default/seed0" and kept.split == "validation"
    assert kept.example_ids.tolist() == [0, 1, 2] and kept.predictions.tolist() == [1, 0, 2]
    assert kept.references.dtype == np.int64
    record = tmp_path / "run" / "result.json"
    assert predictions_beside(record, "m/x/t/default/seed0").aligns_with(kept)
    assert predictions_beside(record, "another/run") is None
    assert predictions_beside(tmp_path / "elsewhere" / "result.json", "x") is None
    ids = write_predictions(tmp_path / "ids", "r", [0], [0], example_ids=[7])
    assert read_predictions(ids).example_ids.tolist() == [7]


def test_bad_predictions_files_are_refused(tmp_path):
    with pytest.raises(PredictionsError, match="2 predictions for 1 references"):
        write_predictions(tmp_path, "r", [0, 1], [0])
    path = tmp_path / PREDICTIONS_FILE
    payload = {"run_id": "r", "split": "validation", "example_ids": [0, 1]}
    path.write_text(json.dumps({**payload, "predictions": [0]}))
    with pytest.raises(PredictionsError, match="missing references"):
        read_predictions(path)
    path.write_text(json.dumps({**payload, "predictions": [0], "references": [0, 1]}))
    with pytest.raises(PredictionsError, match="of one length"):
        read_predictions(path)
    path.write_text("{")
    with pytest.raises(PredictionsError, match="not valid JSON"):
        read_predictions(path)
