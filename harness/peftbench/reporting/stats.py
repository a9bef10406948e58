"""Statistics for conclusions a reader can trust: confidence intervals per cell, paired tests
between methods on the same validation examples, a noise-aware ranking across tasks, and one
efficiency score. Pure functions over arrays and DataFrames; definitions in
docs/measurement.md (*Uncertainty and comparisons*).

Bootstrap resamples are drawn as multinomial example weights and the metrics are computed from
the weighted confusion matrix, so that thousands of resamples cost one matrix product. Which
statistics apply to a metric is its declared kind; its formula over confusion matrices is the
one its ``evaluate`` module computes (:mod:`peftbench.plugin.metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from peftbench.plugin.metrics import METRICS, MetricKind, confusion_matrix

CONFIDENCE = 0.95
"""Level of every interval."""
ALPHA = 0.05
"""Significance level of the paired tests and the ranking, after Holm's correction."""
RESAMPLES = 2000
"""Bootstrap resamples per interval and per paired bootstrap test."""
SEED = 0
"""Seed of every bootstrap: identical input, identical report."""


@dataclass(frozen=True)
class CellPredictions:
    """A cell's finished seeds' validation predictions (seeds × examples), all on the same
    examples."""

    metric: str
    seeds: tuple[int, ...]
    predictions: np.ndarray
    references: np.ndarray
    example_ids: np.ndarray

    def aligns_with(self, other: CellPredictions) -> bool:
        return (
            self.metric == other.metric
            and np.array_equal(self.example_ids, other.example_ids)
            and np.array_equal(self.references, other.references)
        )

    def only(self, seeds: tuple[int, ...]) -> np.ndarray:
        """The prediction rows of ``seeds``, in that order."""
        return self.predictions[[self.seeds.index(s) for s in seeds]]


def bootstrappable(metric: str) -> bool:
    """Whether the bootstrap can recompute ``metric`` from a predictions file: a declared
    proportion or confusion metric (:class:`~peftbench.plugin.metrics.MetricKind`). Other
    metrics get no bootstrap interval. A generation run's predictions file holds its exact
    matches (1/0) against references all 1, so exact match is the accuracy of that file."""
    return metric in METRICS and METRICS[metric].from_confusion is not None


def is_proportion(metric: str) -> bool:
    """Whether ``metric`` is the share of examples right (each example a Bernoulli trial): the
    binomial test against chance, the Wilson interval and McNemar's test apply to it."""
    return metric in METRICS and METRICS[metric].kind == MetricKind.PROPORTION


def _score(metric: str) -> Callable[[np.ndarray], np.ndarray]:
    """``metric`` of confusion matrices (its declared ``from_confusion``)."""
    score = METRICS[metric].from_confusion if metric in METRICS else None
    if score is None:
        raise ValueError(f"metric {metric!r} is not computed from confusion matrices")
    return score


def confusion(predictions: np.ndarray, references: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted confusion matrices: ``predictions`` (seeds × n), ``weights`` (resamples × n)
    -> (seeds × resamples × classes × classes)."""
    classes = int(max(predictions.max(initial=0), references.max(initial=0))) + 1
    codes = references[None, :] * classes + predictions
    onehot = np.eye(classes * classes)[codes]  # seeds × n × classes²
    counts = weights @ onehot  # one matrix product per seed
    return counts.reshape(*counts.shape[:2], classes, classes)


def metric_value(metric: str, predictions: np.ndarray, references: np.ndarray) -> float:
    """``metric`` of one run's predictions."""
    return float(_score(metric)(confusion_matrix(predictions, references)))


def _draws(seeds: int, examples: int, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Example weights (resamples × examples) and seed draws (resamples × seeds)."""
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(examples, np.full(examples, 1 / examples), size=resamples)
    return weights.astype(float), rng.integers(0, seeds, size=(resamples, seeds))


def _seed_means(per_seed: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Mean over each resample's drawn seeds of a (seeds × resamples) array."""
    return per_seed[draws, np.arange(len(draws))[:, None]].mean(axis=1)


def cell_resamples(
    metric: str,
    predictions: np.ndarray,
    references: np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> np.ndarray:
    """Two-stage bootstrap distribution of a cell's mean score over its seeds: each resample
    draws the seeds with replacement and the validation examples with replacement (the same
    examples for every seed drawn), and averages the metric over the drawn seeds."""
    predictions = np.atleast_2d(predictions)
    weights, draws = _draws(len(predictions), len(references), resamples, seed)
    per_seed = _score(metric)(confusion(predictions, references, weights))
    return _seed_means(per_seed, draws)


def percentile_interval(
    resamples: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """The central ``confidence`` share of a bootstrap distribution."""
    tail = (1 - confidence) / 2
    low, high = np.quantile(resamples, [tail, 1 - tail])
    return float(low), float(high)


def wilson_interval(
    accuracy: float, examples: int, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Wilson score interval of a proportion (accuracy, exact match) on ``examples`` examples
    (no predictions needed)."""
    from scipy.stats import binomtest

    right = round(accuracy * examples)
    interval = binomtest(right, int(examples)).proportion_ci(confidence, method="wilson")
    return float(interval.low), float(interval.high)


@dataclass(frozen=True)
class PairedResult:
    """A paired comparison of runs A and B on the same validation examples."""

    seeds: int
    score_a: float
    score_b: float
    test: str
    p_value: float
    discordant: tuple[int, int] | None = None
    """McNemar: examples only A got right, only B got right."""

    @property
    def difference(self) -> float:
        return self.score_a - self.score_b


def mcnemar_exact(a: np.ndarray, b: np.ndarray, references: np.ndarray) -> tuple[int, int, float]:
    """McNemar's exact test: the two-sided binomial test (p = 1/2) of the examples only A got
    right among those exactly one of A and B got right; p = 1 when there are none."""
    from scipy.stats import binomtest

    right_a, right_b = a == references, b == references
    only_a, only_b = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    if only_a + only_b == 0:
        return only_a, only_b, 1.0
    return only_a, only_b, float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def paired_bootstrap(
    metric: str,
    a: np.ndarray,
    b: np.ndarray,
    references: np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> float:
    """Two-sided paired bootstrap p-value of the difference of mean scores of A and B (seeds ×
    examples each, rows paired by seed): every resample draws the same examples and the same
    seeds for both, and p = min(1, 2 · min(1 + #(d* ≤ 0), 1 + #(d* ≥ 0)) / (resamples + 1))."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    weights, draws = _draws(len(a), len(references), resamples, seed)
    score = _score(metric)
    differences = _seed_means(score(confusion(a, references, weights)), draws) - _seed_means(
        score(confusion(b, references, weights)), draws
    )
    tails = min((differences <= 0).sum(), (differences >= 0).sum()) + 1
    return float(min(1.0, 2 * tails / (resamples + 1)))


def compare(a: CellPredictions, b: CellPredictions, seed: int | None = None) -> PairedResult:
    """Paired test of two cells on the same examples: on one ``seed``, or (None) across the
    seeds both finished. McNemar's exact test for a proportion (:func:`is_proportion`) on one
    seed; the paired bootstrap otherwise."""
    if not a.aligns_with(b):
        raise ValueError("the two cells were not scored on the same validation examples")
    shared = tuple(s for s in a.seeds if s in b.seeds) if seed is None else (seed,)
    if not shared:
        raise ValueError("no seed finished in both cells")
    pa, pb, refs = a.only(shared), b.only(shared), a.references
    scores = [
        float(np.mean([metric_value(a.metric, row, refs) for row in rows])) for rows in (pa, pb)
    ]
    if is_proportion(a.metric) and len(shared) == 1:
        only_a, only_b, p = mcnemar_exact(pa[0], pb[0], refs)
        return PairedResult(1, *scores, "McNemar exact", p, (only_a, only_b))
    p = paired_bootstrap(a.metric, pa, pb, refs)
    return PairedResult(len(shared), *scores, "paired bootstrap", p)


def holm(p_values: pd.Series, alpha: float = ALPHA) -> tuple[pd.Series, pd.Series]:
    """Holm-adjusted p-values and whether each hypothesis is rejected at ``alpha``."""
    from statsmodels.stats.multitest import multipletests

    if p_values.empty:
        return p_values.astype(float), p_values.astype(bool)
    reject, adjusted, _, _ = multipletests(p_values.to_numpy(dtype=float), alpha, method="holm")
    return pd.Series(adjusted, index=p_values.index), pd.Series(reject, index=p_values.index)


def pairwise(cells: dict[tuple[str, str, str], CellPredictions]) -> pd.DataFrame:
    """Every pair of methods on the same task × model: per seed both finished, and across those
    seeds when there are several (``seed`` = ``"all"``). ``p_holm`` corrects within each task ×
    model × seed family."""
    rows = []
    for (task, method, model), a in cells.items():
        for (task_b, method_b, model_b), b in cells.items():
            if (task_b, model_b) != (task, model) or method_b <= method or not a.aligns_with(b):
                continue
            shared = [s for s in a.seeds if s in b.seeds]
            levels = [*shared, None] if len(shared) > 1 else shared
            for seed in levels:
                result = compare(a, b, seed)
                rows.append(
                    {
                        "task": task,
                        "model": model,
                        "method_a": method,
                        "method_b": method_b,
                        "seed": "all" if seed is None else str(seed),
                        "seeds": result.seeds,
                        "metric": a.metric,
                        "score_a": result.score_a,
                        "score_b": result.score_b,
                        "difference": result.difference,
                        "test": result.test,
                        "only_a_right": result.discordant[0] if result.discordant else None,
                        "only_b_right": result.discordant[1] if result.discordant else None,
                        "p_value": result.p_value,
                    }
                )
    columns = ["task", "model", "method_a", "method_b", "seed", "seeds", "metric", "score_a"]
    columns += ["score_b", "difference", "test", "only_a_right", "only_b_right", "p_value"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["p_holm"], frame["distinguishable"] = np.nan, False
    for _, family in frame.groupby(["task", "model", "seed"]):
        adjusted, reject = holm(family["p_value"])
        frame.loc[family.index, "p_holm"] = adjusted
        frame.loc[family.index, "distinguishable"] = reject
    return frame


def versus_leader(
    leader: CellPredictions | None, others: dict[object, CellPredictions | None]
) -> pd.DataFrame:
    """Each of ``others`` against the ``leader`` (across their shared seeds), Holm-corrected over
    the rows compared: ``p_value``, ``p_holm``, ``distinguishable`` (at :data:`ALPHA`); missing
    where a row has no predictions or scored other examples."""
    p = pd.Series(np.nan, index=list(others), dtype=float)
    tests = pd.Series("", index=p.index, dtype=object)
    for key, cell in others.items():
        if leader is not None and cell is not None and leader.aligns_with(cell):
            if any(s in cell.seeds for s in leader.seeds):
                result = compare(leader, cell)
                p[key], tests[key] = result.p_value, result.test
    tested = p.dropna()
    adjusted, reject = holm(tested)
    return pd.DataFrame(
        {
            "p_value": p,
            "test": tests,
            "p_holm": adjusted.reindex(p.index),
            "distinguishable": reject.reindex(p.index),
        }
    )


@dataclass(frozen=True)
class Ranking:
    """Friedman test over methods (blocks: task × model cells where every method finished) with
    the Nemenyi post-hoc."""

    ranks: pd.Series
    """Average rank per method, 1 = best."""
    p_value: float
    nemenyi: pd.DataFrame
    critical_difference: float
    blocks: int
    dropped: int
    """Task × model blocks left out because a method did not finish there."""


def friedman_nemenyi(scores: pd.DataFrame, alpha: float = ALPHA) -> Ranking | None:
    """Rank the columns (methods) of ``scores`` (blocks × methods, higher is better; rows with a
    missing value dropped). None with fewer than 3 methods or 2 complete blocks."""
    import scikit_posthocs
    from scipy.stats import friedmanchisquare, studentized_range

    complete = scores.dropna()
    methods, blocks = complete.shape[1], complete.shape[0]
    if methods < 3 or blocks < 2:
        return None
    ranks = complete.rank(axis=1, ascending=False).mean()
    p_value = float(friedmanchisquare(*(complete[c] for c in complete.columns)).pvalue)
    nemenyi = scikit_posthocs.posthoc_nemenyi_friedman(complete.to_numpy())
    nemenyi.index = nemenyi.columns = complete.columns
    q = studentized_range.ppf(1 - alpha, methods, np.inf) / math.sqrt(2)
    cd = float(q * math.sqrt(methods * (methods + 1) / (6 * blocks)))
    return Ranking(ranks, p_value, nemenyi, cd, blocks, len(scores) - blocks)


def efficiency(normalised: pd.Series, trainable: pd.Series) -> pd.Series:
    """Normalised score per decade of trainable parameters, ``normalised / log10(trainable)``;
    missing where either is, or where fewer than 10 parameters train."""
    decades = np.log10(trainable.where(trainable >= 10))
    return normalised / decades
