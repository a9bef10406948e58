"""Result records -> one flat table (one row per run, dotted column names)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from peftbench import metrics
from peftbench.grid import DEFAULT_SETTING
from peftbench.record import RecordError, read_record

DROPPED = ("training.losses",)
"""Per-step series stay in the records; the table keeps scalars."""


def flatten(record: dict) -> dict:
    """One record as a flat row: nested keys joined with dots, hyperparameters included."""
    row = pd.json_normalize(record, sep=".").iloc[0].to_dict()
    for key in DROPPED:
        row.pop(key, None)
    row["record_path"] = record.get("_path")
    return row


def collect(paths: Iterable[str | os.PathLike], skip_invalid: bool = False) -> pd.DataFrame:
    """Read and validate every record; a bad file stops with its name (or warns, when skipping)."""
    rows = []
    for path in paths:
        try:
            record = read_record(path)
        except (RecordError, OSError) as error:
            if not skip_invalid:
                raise
            warnings.warn(f"skipped: {error}", stacklevel=2)
            continue
        rows.append(flatten({**record, "_path": str(path)}))
    frame = pd.DataFrame(rows)
    return frame.drop(columns=[c for c in frame.columns if c == "_path"])


def write_table(frame: pd.DataFrame, out: str | os.PathLike) -> None:
    """Write the table as CSV atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, out)


# Analysis of the table: pure functions over DataFrames, used by the leaderboards.

ROW = ["method", "model"]
"""One leaderboard row: a method on a model; tasks and seeds are averaged over."""


STATUS_TEXT = {
    "oom": "out of memory",
    "unsupported": "unsupported",
    "diverged": "diverged",
    "failed": "failed",
}


def column(table: pd.DataFrame, name: str) -> pd.Series:
    """``table[name]``, or all-missing when no record wrote that field."""
    if name in table:
        return table[name]
    return pd.Series(np.nan, index=table.index, dtype=float)


def primary_value(table: pd.DataFrame, prefix: str) -> pd.Series:
    """Each row's ``{prefix}.{primary metric}`` (missing where the run has no metrics)."""
    values = [
        table.at[index, f"{prefix}.{metric}"] if f"{prefix}.{metric}" in table else np.nan
        for index, metric in column(table, "metrics.primary").items()
    ]
    return pd.Series(values, index=table.index, dtype=float)


def normalise(score: pd.Series, chance: pd.Series, best: pd.Series | float = 1.0) -> pd.Series:
    """Chance-normalised score ``(score - chance) / (best - chance)``: 0 at chance, 1 perfect.

    Missing where chance is already perfect (nothing to learn)."""
    span = best - chance
    return ((score - chance) / span).where(span != 0)


CHANCE_ALPHA = 0.01
"""Significance level of the test that a run's accuracy is above chance."""


def above_chance_p(
    accuracy: pd.Series, chance: pd.Series, examples: pd.Series, metric: pd.Series
) -> pd.Series:
    """One-sided exact binomial test of each run's accuracy on ``examples`` validation examples
    against the majority-class rate ``chance``: the p-value of scoring at least as many right by
    guessing at that rate. Missing for other metrics (their examples are not Bernoulli trials)."""
    from scipy.stats import binom

    right = (accuracy * examples).round()
    # P(X >= right) for X ~ Binomial(examples, chance), as scipy's binomtest computes it.
    tail = pd.Series(binom.sf(right - 1, examples, chance), index=accuracy.index, dtype=float)
    return tail.where(metric == "accuracy")


def peak_memory(table: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Training peak memory (bytes) and its kind: GPU peak allocated if measured, else CPU RSS."""
    gpu = column(table, "memory.train_gpu_peak_allocated_bytes").astype(float)
    cpu = column(table, "memory.train_cpu_peak_rss_bytes").astype(float)
    kind = pd.Series(None, index=table.index, dtype=object)
    kind[cpu.notna()] = "CPU peak RSS"
    kind[gpu.notna()] = "GPU peak allocated"
    return gpu.fillna(cpu), kind


def runs(table: pd.DataFrame) -> pd.DataFrame:
    """One tidy row per run. Scores, memory and throughput are kept for finished runs only."""
    ok = table["status.code"] == "ok"
    metric = column(table, "metrics.primary")
    score = primary_value(table, "metrics.values")
    chance = primary_value(table, "metrics.chance")
    declared = metric.dropna().unique()
    best = metric.map({m: metrics.metric(m).best for m in declared}).astype(float)
    sign = metric.map({m: metrics.metric(m).sign for m in declared}).astype(float)
    base = column(table, "params.base_total").astype(float)
    trainable = column(table, "params.trainable").astype(float)
    stored = column(table, "params.stored").astype(float)
    memory, memory_kind = peak_memory(table)
    examples = column(table, "metrics.num_examples").astype(float)
    return pd.DataFrame(
        {
            "task": table["spec.task"].astype(str),
            "method": table["spec.method"].astype(str),
            "model": table["spec.model"].astype(str),
            "setting": column(table, "spec.setting")
            .astype(object)
            .fillna(DEFAULT_SETTING)
            .astype(str),
            "seed": table["spec.seed"],
            "status": table["status.code"],
            "message": column(table, "status.message").astype(object).fillna("").astype(str),
            "metric": metric.where(ok),
            "score": score.where(ok),
            "dev_score": primary_value(table, "metrics.dev.values").where(ok),
            "dev_ranking": (sign * primary_value(table, "metrics.dev.values")).where(ok),
            "chance": chance.where(ok),
            "normalised": normalise(score, chance, best).where(ok),
            "chance_p": above_chance_p(score, chance, examples, metric).where(ok),
            "base_total": base,
            "trainable": trainable,
            "trainable_pct": column(table, "params.trainable_pct").fillna(100 * trainable / base),
            "stored_bytes": column(table, "params.stored_bytes").astype(float),
            "stored_pct": column(table, "params.stored_pct").fillna(100 * stored / base),
            "memory_bytes": memory.where(ok),
            "memory_kind": memory_kind.where(ok),
            "tokens_per_s": column(table, "throughput.train_tokens_per_s").astype(float).where(ok),
        }
    )


def failure_note(codes: pd.Series) -> str:
    """'' when every run finished; the status when all failed alike; else '1/3 failed, ...'."""
    failed = codes[codes != "ok"]
    if failed.empty:
        return ""
    counts = failed.value_counts().sort_index()
    if len(counts) == 1 and len(failed) == len(codes):
        return STATUS_TEXT[counts.index[0]]
    return ", ".join(f"{n}/{len(codes)} {STATUS_TEXT[code]}" for code, n in counts.items())


def _first(values: pd.Series) -> object:
    values = values.dropna()
    return values.iloc[0] if len(values) else None


COSTS = {
    "trainable": "mean",
    "trainable_pct": "mean",
    "stored_bytes": "mean",
    "stored_pct": "mean",
    "memory_bytes": "mean",
    "memory_kind": _first,
    "tokens_per_s": "mean",
}
"""How a row's costs combine over its runs (seeds, and tasks in the overall table)."""


CELL = ["task", *ROW]
"""One leaderboard cell: a method on a model on a task (the unit hyperparameters are chosen for)."""


def grid_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per task × method × model × setting: dev and validation scores (mean, and std over
    seeds), seeds finished, and ``selected``: the setting :func:`select_settings` keeps.

    The selection rule: settings whose every seed finished rank above the others; among them the
    best mean dev score wins (highest, or lowest for a metric where lower is better), ties going
    to the setting first in grid order (the order of the records). The validation score plays no
    part in it."""
    grouped = runs.groupby([*CELL, "setting"], sort=False)
    grid = grouped.agg(
        dev_mean=("dev_score", "mean"),
        dev_ranking=("dev_ranking", "mean"),
        score_mean=("score", "mean"),
        score_std=("score", "std"),
        seeds_ok=("score", "count"),
        seeds=("seed", "nunique"),
        note=("status", failure_note),
    ).reset_index()
    grid["order"] = range(len(grid))
    complete = grid["seeds_ok"] == grid["seeds"]
    ranked = grid.assign(complete=complete, dev=grid["dev_ranking"].fillna(-np.inf)).sort_values(
        ["complete", "dev", "order"], ascending=[False, False, True]
    )
    chosen = ranked.drop_duplicates(CELL)["order"]
    grid["selected"] = grid["order"].isin(chosen)
    grid["settings"] = grid.groupby(CELL)["setting"].transform("size")
    grid = grid.drop(columns=["order", "dev_ranking"])
    return grid.sort_values([*CELL, "setting"]).reset_index(drop=True)


def select_settings(runs: pd.DataFrame, grid: pd.DataFrame) -> pd.DataFrame:
    """The runs of each task × method × model's selected setting; ``grid`` is
    :func:`grid_summary` of the same runs."""
    keys = grid.loc[grid["selected"], [*CELL, "setting"]]
    return runs.merge(keys, on=[*CELL, "setting"], how="inner")


def task_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per task × method × model: mean and std over seeds of the score, costs, failures (one
    setting per cell: pass the runs :func:`select_settings` keeps). ``chance_p`` is the largest
    over finished seeds of :func:`above_chance_p`: below :data:`CHANCE_ALPHA`, each beat chance."""
    grouped = runs.groupby(CELL, sort=True)
    summary = grouped.agg(
        setting=("setting", _first),
        metric=("metric", _first),
        chance=("chance", "mean"),
        score_mean=("score", "mean"),
        score_std=("score", "std"),
        normalised_mean=("normalised", "mean"),
        normalised_std=("normalised", "std"),
        chance_p=("chance_p", "max"),
        seeds_ok=("score", "count"),
        seeds=("seed", "nunique"),
        note=("status", failure_note),
        **{name: (name, how) for name, how in COSTS.items()},
    )
    return summary.reset_index()


def win_rates(scores: pd.DataFrame) -> pd.Series:
    """Mean over columns (tasks) of the share of other rows each row beats.

    Ties count half; a missing score loses to any score and ties with another missing one.
    Missing for a row without any score."""
    n = len(scores)
    if n < 2:
        return pd.Series(np.nan, index=scores.index, dtype=float)
    values = scores.fillna(-np.inf).to_numpy(dtype=float)
    mine, theirs = values[:, None, :], values[None, :, :]
    wins = (mine > theirs).sum(axis=1) + 0.5 * ((mine == theirs).sum(axis=1) - 1)
    rates = pd.Series((wins / (n - 1)).mean(axis=1), index=scores.index)
    return rates.where(scores.notna().any(axis=1))


def overall(runs: pd.DataFrame) -> pd.DataFrame:
    """Per method × model: mean over tasks of the normalised score (mean and std over seeds,
    counting seeds where every task finished), mean win rate, model size, costs; best first."""
    tasks = sorted(runs["task"].unique())
    per_seed = runs.pivot_table(
        index=[*ROW, "seed"], columns="task", values="normalised", aggfunc="mean"
    ).reindex(columns=tasks)
    seed_scores = per_seed.mean(axis=1, skipna=False).dropna()
    by_task = (
        task_summary(runs)
        .pivot(index=ROW, columns="task", values="normalised_mean")
        .reindex(columns=tasks)
    )
    frame = runs.groupby(ROW, sort=True).agg(
        note=("status", failure_note), **{name: (name, how) for name, how in COSTS.items()}
    )
    frame["base_total"] = (
        runs.groupby("model")["base_total"]
        .max()
        .reindex(frame.index.get_level_values("model"))
        .to_numpy()
    )
    grouped = seed_scores.groupby(level=ROW)
    frame["score_mean"] = grouped.mean()
    frame["score_std"] = grouped.std()
    frame["seeds"] = grouped.count()
    frame["seeds"] = frame["seeds"].fillna(0).astype(int)
    frame["win_rate"] = win_rates(by_task.reindex(frame.index))
    frame = frame.sort_values(["score_mean", "win_rate"], ascending=False, na_position="last")
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame.reset_index()


def pareto_front(x: pd.Series, y: pd.Series, minimize_x: bool = True) -> pd.Series:
    """True for the points no other point dominates (x no worse and y no lower, one strictly
    better); y is maximised, x minimised unless ``minimize_x`` is False. Missing: False."""
    cost = x if minimize_x else -x
    valid = cost.notna() & y.notna()
    c, v = cost[valid].to_numpy(dtype=float), y[valid].to_numpy(dtype=float)
    no_worse = (c[None, :] <= c[:, None]) & (v[None, :] >= v[:, None])
    better = (c[None, :] < c[:, None]) | (v[None, :] > v[:, None])
    front = pd.Series(False, index=x.index)
    front[valid] = ~(no_worse & better).any(axis=1)
    return front
