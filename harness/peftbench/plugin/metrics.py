"""Task metrics, computed through ``evaluate``.

A shipped metric (:data:`SHIPPED`) resolves to peftbench's local module, offline; any other name
goes to ``evaluate.load`` as it is (a local folder holding ``<name>/<name>.py``, or a hub metric
id when online).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

LOCAL_METRICS = Path(__file__).parent / "metric_scripts"
SHIPPED = ("accuracy", "matthews_correlation", "exact_match", "token_f1", "rouge_l")
"""The metrics whose ``evaluate`` modules ship in the package, at ``metrics/<name>/<name>.py``."""


@dataclass(frozen=True)
class Metric:
    """What the leaderboards need to know of a metric: its direction and its range."""

    name: str
    higher_is_better: bool
    best: float
    """The perfect score (chance-normalised scores are 1 there)."""
    worst: float

    @property
    def sign(self) -> int:
        """+1 when higher is better, -1 when lower is: ``sign × score`` always ranks up."""
        return 1 if self.higher_is_better else -1


METRICS: dict[str, Metric] = {}
"""Every metric a task may report, by ``evaluate`` name (:func:`register_metric` adds one)."""


def register_metric(name: str, higher_is_better: bool, best: float, worst: float) -> Metric:
    """Declare a metric's direction and range, e.g. from a task plugin using another
    ``evaluate`` metric."""
    if higher_is_better != (best > worst):
        raise ValueError(f"metric {name!r}: best={best} and worst={worst} contradict its direction")
    METRICS[name] = Metric(name, higher_is_better, best, worst)
    return METRICS[name]


register_metric("accuracy", higher_is_better=True, best=1.0, worst=0.0)
register_metric("matthews_correlation", higher_is_better=True, best=1.0, worst=-1.0)
register_metric("exact_match", higher_is_better=True, best=1.0, worst=0.0)
register_metric("token_f1", higher_is_better=True, best=1.0, worst=0.0)
register_metric("rouge_l", higher_is_better=True, best=1.0, worst=0.0)

Answer = TypeVar("Answer", int, str)
"""A class label (classification and causal-LM tasks) or an answer string (generation)."""


def metric(name: str) -> Metric:
    """The declared metric ``name``; an undeclared one raises naming the declared ones."""
    if name not in METRICS:
        raise ValueError(
            f"metric {name!r} has no declared direction; declared: {', '.join(sorted(METRICS))} "
            "(declare it with peftbench.plugin.metrics.register_metric)"
        )
    return METRICS[name]


def metric_location(name: str) -> str:
    """What ``evaluate.load`` is given for ``name``: a shipped metric's module folder, else
    ``name`` itself. A shipped metric whose module is missing (a broken install) is an error,
    not a silent download from the hub."""
    if name not in SHIPPED:
        return name
    script = LOCAL_METRICS / name / f"{name}.py"
    if not script.is_file():
        raise FileNotFoundError(
            f"metric {name!r} ships with peftbench, but its module {script} is missing"
        )
    return str(script.parent)


@cache
def load_metric(name: str) -> Any:
    """The ``evaluate`` module of metric ``name``; an unknown name raises ``ValueError`` naming
    the shipped metrics."""
    import evaluate

    location = metric_location(name)
    try:
        return evaluate.load(location)
    except FileNotFoundError as error:
        raise ValueError(
            f"unknown metric {name!r}: evaluate.load({location!r}) finds no folder or hub metric "
            f"of that name ({error}); peftbench's offline metrics: {', '.join(SHIPPED)}"
        ) from error


def compute_metrics(
    names: tuple[str, ...], predictions: Sequence[Answer], references: Sequence[Answer]
) -> dict[str, float]:
    """Every metric in ``names`` over the predictions (class labels, or answer strings for
    generation tasks); one float per metric."""
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


def baseline_metrics(
    names: tuple[str, ...], train_references: Sequence[str], references: Sequence[str]
) -> dict[str, float]:
    """The metrics of the trivial predictor that always answers the training split's most
    frequent reference (the first seen among equally frequent ones): a generation task's
    chance level."""
    if not train_references:
        raise ValueError("baseline of an empty training split is undefined")
    constant = Counter(train_references).most_common(1)[0][0]
    return compute_metrics(names, [constant] * len(references), references)
