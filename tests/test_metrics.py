from __future__ import annotations

import math

import pytest

from peftbench.metrics import chance_metrics, compute_metrics, metric_location


def test_metrics_are_local_evaluate_modules():
    for name in ("accuracy", "matthews_correlation"):
        assert metric_location(name).endswith(name)


def test_accuracy_and_mcc_match_closed_forms():
    predictions, references = [1, 1, 0, 0, 1], [1, 0, 0, 0, 1]
    values = compute_metrics(("accuracy", "matthews_correlation"), predictions, references)
    assert values["accuracy"] == pytest.approx(4 / 5)
    tp, tn, fp, fn = 2, 2, 1, 0
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert values["matthews_correlation"] == pytest.approx(mcc)


def test_chance_is_the_majority_class_predictor():
    chance = chance_metrics(("accuracy", "matthews_correlation"), [2, 2, 1], [2, 0, 1, 2])
    assert chance == {"accuracy": 0.5, "matthews_correlation": 0.0}
