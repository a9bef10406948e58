"""Task metrics, computed through ``evaluate``, and what the leaderboards know of each.

A shipped metric (:data:`SHIPPED`) resolves to peftbench's local module, offline; any other name
goes to ``evaluate.load`` as it is (a local folder holding ``<name>/<name>.py``, or a hub metric
id when online).

Accuracy and Matthews correlation are defined once, here, over confusion matrices
(:func:`accuracy_of`, :func:`matthews_of`, vectorised over any leading axes): the shipped
``evaluate`` modules call them, and the report's bootstrap recomputes them from resampled
confusion matrices.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

LOCAL_METRICS = Path(__file__).parent / "metric_scripts"


class MetricKind(str, Enum):
    """What a metric's score is, which decides the statistics the report can make of it
    (docs/measurement.md, *Uncertainty and comparisons*). Members equal their values."""

    PROPORTION = "proportion"
    """The share of examples with a 1/0 outcome right (accuracy, exact match): each example a
    Bernoulli trial, so the binomial test against chance, the Wilson interval, McNemar's test and
    the bootstrap (the accuracy of the predictions file's confusion matrix) apply."""
    CONFUSION = "confusion"
    """A function of the confusion matrix that is not a share (Matthews correlation): the
    bootstrap and the paired bootstrap apply, through the metric's ``from_confusion``."""
    CONTINUOUS = "continuous"
    """A mean of per-example scores in a range (ROUGE-L, token F1): no interval, no test."""

    def __str__(self) -> str:
        return self.value


def accuracy_of(confusion: np.ndarray) -> np.ndarray:
    """Accuracy of confusion matrices (..., true class, predicted class): the diagonal's share."""
    return np.trace(confusion, axis1=-2, axis2=-1) / confusion.sum(axis=(-2, -1))


def matthews_of(confusion: np.ndarray) -> np.ndarray:
    """Matthews correlation (multi-class; Gorodkin, 2004) of confusion matrices (..., true class,
    predicted class), the formula of sklearn's ``matthews_corrcoef``; 0 where it is undefined
    (one class predicted or present), as there."""
    true, predicted = confusion.sum(axis=-1), confusion.sum(axis=-2)
    correct = np.trace(confusion, axis1=-2, axis2=-1)
    total = confusion.sum(axis=(-2, -1))
    cov_tp = correct * total - (true * predicted).sum(axis=-1)
    cov_pp = total**2 - (predicted * predicted).sum(axis=-1)
    cov_tt = total**2 - (true * true).sum(axis=-1)
    denominator = np.sqrt(cov_tt * cov_pp)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, cov_tp / denominator, 0.0)


def class_codes(predictions: Sequence[int], references: Sequence[int]) -> tuple[np.ndarray, int]:
    """Each example's cell of the confusion matrix (``reference × classes + prediction``) and
    the number of classes (the largest label plus one). Labels are class indices: a negative one
    is an error."""
    predicted, expected = np.asarray(predictions), np.asarray(references)
    if predicted.shape != expected.shape or predicted.ndim != 1:
        raise ValueError(
            f"predictions {predicted.shape} and references {expected.shape}: one label each"
        )
    if len(expected) == 0:
        raise ValueError("a metric of an empty set is undefined")
    if min(predicted.min(), expected.min()) < 0:
        raise ValueError("labels are class indices: valid labels are 0 or more")
    classes = int(max(predicted.max(), expected.max())) + 1
    return expected.astype(np.int64) * classes + predicted, classes


def confusion_matrix(predictions: Sequence[int], references: Sequence[int]) -> np.ndarray:
    """The (true class × predicted class) counts of one set of predictions, as floats."""
    codes, classes = class_codes(predictions, references)
    counts = np.bincount(codes, minlength=classes * classes).astype(float)
    return counts.reshape(classes, classes)


Score = Callable[[np.ndarray], np.ndarray]
"""A metric of confusion matrices (..., classes, classes), vectorised over the leading axes."""


@dataclass(frozen=True)
class Metric:
    """What the leaderboards need to know of a metric: its direction, its range and its kind."""

    name: str
    higher_is_better: bool
    best: float
    """The perfect score (chance-normalised scores are 1 there)."""
    worst: float
    kind: MetricKind = MetricKind.CONTINUOUS
    """Which statistics apply (:class:`MetricKind`)."""
    generation: bool = False
    """Scored on generated text: its chance level is the baseline's (always the most frequent
    training answer), not the majority class's."""
    from_confusion: Score | None = None
    """The metric of confusion matrices: accuracy for a proportion, the metric's own formula
    for a confusion metric, ``None`` for a continuous one."""

    @property
    def sign(self) -> int:
        """+1 when higher is better, -1 when lower is: ``sign × score`` always ranks up."""
        return 1 if self.higher_is_better else -1


METRICS: dict[str, Metric] = {}
"""Every metric a task may report, by ``evaluate`` name (:func:`register_metric` adds one)."""


def register_metric(
    name: str,
    higher_is_better: bool,
    best: float,
    worst: float,
    kind: MetricKind | str = MetricKind.CONTINUOUS,
    generation: bool = False,
    from_confusion: Score | None = None,
) -> Metric:
    """Declare a metric's direction, range and kind (:class:`MetricKind`), e.g. from a task
    plugin using another ``evaluate`` metric; a ``confusion`` metric gives its formula over
    confusion matrices (``from_confusion``), a proportion's is accuracy. The default kind,
    ``continuous``, claims least: no interval, no test."""
    if higher_is_better != (best > worst):
        raise ValueError(f"metric {name!r}: best={best} and worst={worst} contradict its direction")
    try:
        kind = MetricKind(kind)
    except ValueError:
        valid = ", ".join(k.value for k in MetricKind)
        raise ValueError(f"metric {name!r}: kind={kind!r}; valid: {valid}") from None
    needs = kind == MetricKind.CONFUSION
    if needs != (from_confusion is not None):
        raise ValueError(
            f"metric {name!r}: a {kind} metric {'needs' if needs else 'takes no'} "
            "from_confusion (its formula over confusion matrices)"
        )
    if kind == MetricKind.PROPORTION:  # the share right: the accuracy of its predictions file
        from_confusion = accuracy_of
    METRICS[name] = Metric(name, higher_is_better, best, worst, kind, generation, from_confusion)
    return METRICS[name]


register_metric("accuracy", True, best=1.0, worst=0.0, kind="proportion")
register_metric(
    "matthews_correlation", True, best=1.0, worst=-1.0, kind="confusion", from_confusion=matthews_of
)
register_metric("exact_match", True, best=1.0, worst=0.0, kind="proportion", generation=True)
register_metric("token_f1", True, best=1.0, worst=0.0, kind="continuous", generation=True)
register_metric("rouge_l", True, best=1.0, worst=0.0, kind="continuous", generation=True)

SHIPPED = tuple(METRICS)
"""The metrics whose ``evaluate`` modules ship in the package, at
``metric_scripts/<name>/<name>.py``: the ones declared here."""


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
