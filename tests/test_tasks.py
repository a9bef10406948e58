from __future__ import annotations

from collections import Counter

import pytest

from peftbench import TASKS
from peftbench.plugin.task import TaskDataError, content_fingerprint


@pytest.mark.parametrize("name", ["docstring-module", "docstring-match"])
def test_embedded_tasks_are_real_deterministic_and_large_enough(name):
    task = TASKS.get(name)
    data = task.load()
    again = task.load()
    assert content_fingerprint(data) == content_fingerprint(again)
    assert len(data["train"]) >= 1000 and len(data["validation"]) >= 200
    for field in task.text_fields:
        assert all(isinstance(t, str) and t.strip() for t in data["train"][field][:50])
    labels = Counter(data["train"]["label"])
    assert set(labels) == set(range(task.num_labels))
    # Balanced: no class has more than twice another's examples.
    assert max(labels.values()) <= 2 * min(labels.values())
    # Splits do not share examples.
    key = lambda row: tuple(row[f] for f in task.text_fields)  # noqa: E731
    assert not {key(r) for r in data["train"]} & {key(r) for r in data["validation"]}


def test_docstring_match_pairs_are_consistent():
    data = TASKS.get("docstring-match").load()["train"]
    # A positive pair's docstring is the function's own; a negative's belongs to another function.
    positives = [r for r in data if r["label"] == 1]
    negatives = [r for r in data if r["label"] == 0]
    assert abs(len(positives) - len(negatives)) <= 0.1 * len(data)


@pytest.mark.parametrize(
    "name, rows, fields",
    [
        ("glue/sst2", (60614, 6735), ("sentence",)),
        ("glue/rte", (2127, 363), ("sentence1", "sentence2")),
        ("glue/cola", (7250, 1301), ("sentence",)),
    ],
)
def test_glue_tasks_load_from_a_local_folder(glue_dir, name, rows, fields):
    task = TASKS.get(name)
    data = task.load(str(glue_dir / name.split("/")[1]))
    assert (len(data["train"]), len(data["validation"])) == rows
    assert set(data["train"].column_names) == {*fields, "label"}
    assert set(data["validation"]["label"]) == {0, 1}


def test_glue_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(TaskDataError, match="has no train.tsv, validation.tsv"):
        TASKS.get("glue/rte").load(str(tmp_path))


def test_cola_uses_matthews_correlation():
    task = TASKS.get("glue/cola")
    assert task.primary_metric == "matthews_correlation"
    assert TASKS.get("glue/sst2").primary_metric == "accuracy"
