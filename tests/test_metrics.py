from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

import peftbench
from peftbench.plugin import metrics
from peftbench.plugin.metrics import (
    SHIPPED,
    chance_metrics,
    compute_metrics,
    load_metric,
    metric_location,
)

PACKAGE_METRICS = Path(peftbench.__file__).parent / "metrics"


def test_shipped_metrics_are_the_packages_modules():
    modules = {p.parent.name for p in PACKAGE_METRICS.glob("*/*.py") if p.stem == p.parent.name}
    expected = {"accuracy", "matthews_correlation", "exact_match", "token_f1", "rouge_l"}
    assert set(SHIPPED) == modules == expected
    for name in SHIPPED:
        location = Path(metric_location(name))
        assert location == PACKAGE_METRICS / name and (location / f"{name}.py").is_file()


def test_a_missing_shipped_module_is_an_error_naming_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "LOCAL_METRICS", tmp_path)
    expected = tmp_path / "accuracy" / "accuracy.py"
    with pytest.raises(FileNotFoundError, match=f"'accuracy'.*{re.escape(str(expected))}"):
        metric_location("accuracy")


def test_an_unknown_metric_names_the_shipped_ones(tmp_path, monkeypatch):
    import evaluate

    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)  # no hub look-up
    monkeypatch.chdir(tmp_path)  # nor a folder of that name
    assert metric_location("no_such_metric") == "no_such_metric"
    with pytest.raises(ValueError, match="'no_such_metric'.*accuracy, matthews_correlation"):
        load_metric("no_such_metric")


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
