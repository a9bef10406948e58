from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, matthews_corrcoef

from peftbench.plugin import metrics
from peftbench.plugin.metrics import (
    SHIPPED,
    MetricKind,
    chance_metrics,
    compute_metrics,
    load_metric,
    metric_location,
    register_metric,
)

PACKAGE_METRICS = Path(metrics.__file__).parent / "metric_scripts"


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


@pytest.mark.filterwarnings("ignore:A single label was found")
@pytest.mark.parametrize("classes", [2, 3, 7])
def test_the_shipped_accuracy_and_mcc_modules_equal_sklearn_on_random_labels(classes):
    rng = np.random.default_rng(classes)
    for size in (1, 5, 200):
        references = rng.integers(0, classes, size)
        noisy = rng.integers(0, classes, size)
        predictions = np.where(rng.random(size) < 0.5, references, noisy)
        values = compute_metrics(
            ("accuracy", "matthews_correlation"), predictions.tolist(), references.tolist()
        )
        # Equal, not close: the runs' recorded numbers are sklearn's to the last bit.
        assert values["accuracy"] == accuracy_score(references, predictions)
        assert values["matthews_correlation"] == matthews_corrcoef(references, predictions)


def test_labels_that_are_no_class_indices_are_refused():
    with pytest.raises(ValueError, match="empty set"):
        compute_metrics(("accuracy",), [], [])
    with pytest.raises(ValueError, match="valid labels are 0 or more"):
        compute_metrics(("matthews_correlation",), [0, -1], [0, 1])


def test_each_metrics_kind_is_declared_on_its_registration(monkeypatch):
    kinds = {name: metrics.metric(name).kind for name in SHIPPED}
    assert kinds == {
        "accuracy": "proportion",
        "matthews_correlation": "confusion",
        "exact_match": "proportion",
        "token_f1": "continuous",
        "rouge_l": "continuous",
    }
    assert metrics.metric("accuracy").from_confusion is metrics.accuracy_of
    assert metrics.metric("rouge_l").from_confusion is None
    monkeypatch.setitem(metrics.METRICS, "my_acc", None)  # removed after the test
    assert register_metric("my_acc", True, 1.0, 0.0, kind="proportion").kind == "proportion"
    assert metrics.metric("my_acc").from_confusion is metrics.accuracy_of
    monkeypatch.setitem(metrics.METRICS, "bleu", None)
    assert register_metric("bleu", True, 100.0, 0.0).kind == MetricKind.CONTINUOUS
    with pytest.raises(ValueError, match="kind='share'; valid: proportion, confusion, continuous"):
        register_metric("x", True, 1.0, 0.0, kind="share")
    with pytest.raises(ValueError, match="a confusion metric needs from_confusion"):
        register_metric("f1", True, 1.0, 0.0, kind="confusion")
    with pytest.raises(ValueError, match="a continuous metric takes no from_confusion"):
        register_metric("f1", True, 1.0, 0.0, from_confusion=metrics.matthews_of)
