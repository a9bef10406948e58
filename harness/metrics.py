"""Task metrics, computed through ``evaluate``.

A metric name resolves to peftbench's local module of that name when one ships (offline), else
to whatever ``evaluate.load`` accepts (a hub metric id or a local folder).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

LOCAL_METRICS = Path(__file__).parent / "metrics"


def metric_location(name: str) -> str:
    local = LOCAL_METRICS / name
    return str(local) if (local / f"{name}.py").is_file() else name


@cache
def load_metric(name: str) -> Any:
    import evaluate

    return evaluate.load(metric_location(name))


def compute_metrics(
    names: tuple[str, ...], predictions: list[int], references: list[int]
) -> dict[str, float]:
    """Every metric in ``names`` over the predictions; one float per metric."""
    values: dict[str, float] = {}
    for name in names:
        result = load_metric(name).compute(predictions=predictions, references=references)
        values.update({k: float(v) for k, v in result.items()})
    return values


def chance_metrics(
    names: tuple[str, ...], train_labels: list[int], references: list[int]
) -> dict[str, float]:
    """The metrics of the majority-class predictor (majority taken on the training split)."""
    majority = max(set(train_labels), key=train_labels.count)
    return compute_metrics(names, [majority] * len(references), references)
