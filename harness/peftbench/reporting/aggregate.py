"""Result records -> one flat table (one row per run, dotted column names)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from peftbench.planning.grid import DEFAULT_SETTING
from peftbench.plugin import metrics
from peftbench.records.files import write_text_atomic
from peftbench.records.predictions import Predictions, PredictionsError, predictions_beside
from peftbench.records.record import RecordError, read_record
from peftbench.reporting.stats import (
    CellPredictions,
    Ranking,
    bootstrappable,
    cell_resamples,
    compare,
    efficiency,
    friedman_nemenyi,
    is_proportion,
    metric_value,
    percentile_interval,
    versus_leader,
    wilson_interval,
)

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
    write_text_atomic(out, frame.to_csv(index=False))


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
"""Significance level of the test that a run's accuracy (or exact match) is above chance."""


def above_chance_p(
    accuracy: pd.Series, chance: pd.Series, examples: pd.Series, metric: pd.Series
) -> pd.Series:
    """One-sided exact binomial test of each run's share right on ``examples`` validation
    examples (accuracy, or a generation task's exact match) against the chance rate (the
    majority class's, or the most frequent training answer's): the p-value of scoring at least
    as many right by guessing at that rate. Missing for metrics not declared proportions
    (Matthews correlation, ROUGE-L: their examples are not Bernoulli trials)."""
    from scipy.stats import binom

    right = (accuracy * examples).round()
    # P(X >= right) for X ~ Binomial(examples, chance), as scipy's binomtest computes it.
    tail = pd.Series(binom.sf(right - 1, examples, chance), index=accuracy.index, dtype=float)
    return tail.where(metric.map(is_proportion).astype(bool))


def peak_memory(table: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Training peak memory (bytes) and its kind: GPU peak allocated if measured, else CPU RSS."""
    gpu = column(table, "memory.train_gpu_peak_allocated_bytes").astype(float)
    cpu = column(table, "memory.train_cpu_peak_rss_bytes").astype(float)
    kind = pd.Series(None, index=table.index, dtype=object)
    kind[cpu.notna()] = "CPU peak RSS"
    kind[gpu.notna()] = "GPU peak allocated"
    return gpu.fillna(cpu), kind


LM_COSTS = (
    ("base_ce", "forgetting.base_ce"),
    ("tuned_ce", "forgetting.tuned_ce"),
    ("forgetting", "forgetting.forgetting"),
)
"""Causal-LM and generation runs: the tidy column and the record field of the forgetting
measure (nats/token)."""
SERVING_KINDS = ("unmerged", "merged")
"""The serving measurements of a causal-LM or generation run: as trained, and merged."""
SERVING_UNITS = ("ms_per_token", "tokens_per_s")


def runs(table: pd.DataFrame) -> pd.DataFrame:
    """One tidy row per run. Scores, memory, throughput, forgetting and serving cost are kept
    for finished runs only (serving in ms per token and tokens/s)."""
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
            "run_id": column(table, "run_id").astype(object),
            "record_path": column(table, "record_path").astype(object),
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
            "examples": examples.where(ok),
            "base_total": base,
            "trainable": trainable,
            "trainable_pct": column(table, "params.trainable_pct").fillna(100 * trainable / base),
            "stored_bytes": column(table, "params.stored_bytes").astype(float),
            "stored_pct": column(table, "params.stored_pct").fillna(100 * stored / base),
            "memory_bytes": memory.where(ok),
            "memory_kind": memory_kind.where(ok),
            "tokens_per_s": column(table, "throughput.train_tokens_per_s").astype(float).where(ok),
            **{name: column(table, field).astype(float).where(ok) for name, field in LM_COSTS},
            **{
                f"serve_{kind}_ms_per_token": 1000
                * column(table, f"serving.{kind}.s_per_token").astype(float).where(ok)
                for kind in SERVING_KINDS
            },
            **{
                f"serve_{kind}_tokens_per_s": column(table, f"serving.{kind}.tokens_per_s")
                .astype(float)
                .where(ok)
                for kind in SERVING_KINDS
            },
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
    **{name: "mean" for name, _ in LM_COSTS},
    **{f"serve_{kind}_{unit}": "mean" for kind in SERVING_KINDS for unit in SERVING_UNITS},
}
"""How a row's costs combine over its runs (seeds, and tasks in the overall table: forgetting
and serving over the tasks that measured them)."""


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
        examples=("examples", "max"),
        note=("status", failure_note),
        **{name: (name, how) for name, how in COSTS.items()},
    ).reset_index()
    summary["efficiency"] = efficiency(summary["normalised_mean"], summary["trainable"])
    return summary


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
    frame["efficiency"] = efficiency(frame["score_mean"], frame["trainable"])
    frame = frame.sort_values(["score_mean", "win_rate"], ascending=False, na_position="last")
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame.reset_index()


def cell_predictions(runs: pd.DataFrame) -> dict[tuple[str, str, str], CellPredictions]:
    """Per task × method × model (pass the selected settings' runs): the predictions files of its
    finished seeds, when every one of them has one that matches its record (same run, same
    score recomputed) and all scored the same examples. A file that does not match is skipped
    with a warning; cells without files (older records) are left out."""
    cells = {}
    finished = runs[(runs["status"] == "ok") & runs["record_path"].notna()]
    for key, cell in finished.groupby(CELL, sort=True):
        metric = str(cell["metric"].iloc[0])
        if not bootstrappable(metric):
            continue
        kept = []
        for run in cell.sort_values("seed").itertuples():
            found = _matching_predictions(run, metric)
            if found is None or (kept and not kept[0].aligns_with(found)):
                break
            kept.append(found)
        else:
            cells[key] = CellPredictions(
                metric,
                tuple(int(s) for s in cell.sort_values("seed")["seed"]),
                np.stack([k.predictions for k in kept]),
                kept[0].references,
                kept[0].example_ids,
            )
    return cells


def _matching_predictions(run: tuple, metric: str) -> Predictions | None:
    """A finished run's predictions file, when it is there and gives the run's score."""
    try:
        found = predictions_beside(run.record_path, str(run.run_id))
    except PredictionsError as error:
        warnings.warn(f"skipped: {error}", stacklevel=3)
        return None
    if found is not None and not np.isclose(
        metric_value(metric, found.predictions, found.references), run.score
    ):
        warnings.warn(f"skipped: {run.run_id}'s predictions do not give its score", stacklevel=3)
        return None
    return found


def with_intervals(
    summary: pd.DataFrame, cells: dict[tuple[str, str, str], CellPredictions]
) -> tuple[pd.DataFrame, dict[tuple[str, str, str], np.ndarray]]:
    """``summary`` (:func:`task_summary`) with ``score_low``/``score_high``, the
    :data:`~.stats.CONFIDENCE` interval of each cell's mean score, and ``interval``,
    how it was made: ``bootstrap`` (the cell's predictions files,
    :func:`~.stats.cell_resamples`), ``wilson`` (accuracy or exact match of a single
    finished seed without a file: :func:`peftbench.reporting.stats.wilson_interval` on its example
    count), or ``none``.
    Also each bootstrapped cell's resampled normalised scores."""
    summary = summary.copy()
    low, high, how = [], [], []
    normalised = {}
    for row in summary.itertuples():
        key = (row.task, row.method, row.model)
        if key in cells:
            cell = cells[key]
            resampled = cell_resamples(cell.metric, cell.predictions, cell.references)
            interval, kind = percentile_interval(resampled), "bootstrap"
            best = metrics.metric(cell.metric).best
            normalised[key] = ((resampled - row.chance) / (best - row.chance)).astype(float)
        elif is_proportion(row.metric) and row.seeds_ok == 1 and row.examples > 0:
            interval, kind = wilson_interval(row.score_mean, int(row.examples)), "wilson"
        else:
            interval, kind = (np.nan, np.nan), "none"
        low.append(interval[0])
        high.append(interval[1])
        how.append(kind)
    summary["score_low"], summary["score_high"], summary["interval"] = low, high, how
    return summary, normalised


def ranked(summary: pd.DataFrame) -> pd.DataFrame:
    """A task's cells best first (normalised score, then score), as its table lists them."""
    return summary.sort_values(
        ["normalised_mean", "score_mean"], ascending=False, na_position="last"
    )


def versus_best(
    summary: pd.DataFrame, cells: dict[tuple[str, str, str], CellPredictions]
) -> pd.DataFrame:
    """``summary`` with, per cell, the paired test against its task's leader (the first of
    :func:`ranked`; ``leader`` True there): ``vs_best_test``, ``vs_best_p``, ``vs_best_p_holm``
    (Holm over the task's other cells) and ``distinguishable`` (missing without predictions)."""
    parts = [
        summary.assign(
            leader=False,
            vs_best_test="",
            vs_best_p=np.nan,
            vs_best_p_holm=np.nan,
            distinguishable=np.nan,
        ).iloc[:0]
    ]
    for _, task in summary.groupby("task", sort=True):
        order = ranked(task)
        keys = list(zip(order["task"], order["method"], order["model"], strict=True))
        test = versus_leader(cells.get(keys[0]), {k: cells.get(k) for k in keys[1:]})
        test = test.reindex(keys)
        parts.append(
            order.assign(
                leader=[True] + [False] * (len(keys) - 1),
                vs_best_test=test["test"].to_numpy(),
                vs_best_p=test["p_value"].to_numpy(),
                vs_best_p_holm=test["p_holm"].to_numpy(),
                distinguishable=test["distinguishable"].to_numpy(),
            )
        )
    return pd.concat(parts).sort_values(CELL).reset_index(drop=True)


def method_ranking(summary: pd.DataFrame) -> Ranking | None:
    """Friedman/Nemenyi ranking of the methods over task × model blocks, by normalised score;
    methods that finished in no cell are left out (the blocks they lack are not)."""
    scores = summary.pivot_table(
        index=["task", "model"], columns="method", values="normalised_mean", aggfunc="mean"
    )
    return friedman_nemenyi(scores)


def overall_intervals(
    board: pd.DataFrame, summary: pd.DataFrame, normalised: dict[tuple[str, str, str], np.ndarray]
) -> pd.DataFrame:
    """``board`` (:func:`overall`) with ``score_low``/``score_high``: percentiles of the mean over
    tasks of the cells' resampled normalised scores (tasks resampled independently), for rows
    whose every task cell was bootstrapped with every seed finished; else missing."""
    tasks = sorted(summary["task"].unique())
    complete = summary.set_index(CELL)["seeds_ok"] == summary.set_index(CELL)["seeds"]
    low, high = [], []
    for row in board.itertuples():
        keys = [(task, row.method, row.model) for task in tasks]
        if all(k in normalised and complete.get(k, False) for k in keys):
            bounds = percentile_interval(np.mean([normalised[k] for k in keys], axis=0))
        else:
            bounds = (np.nan, np.nan)
        low.append(bounds[0])
        high.append(bounds[1])
    return board.assign(score_low=low, score_high=high)


def compare_methods(
    results_dir: str | os.PathLike,
    method_a: str,
    method_b: str,
    model: str | None = None,
    task: str | None = None,
) -> str:
    """``peftbench compare``: the paired comparison of two methods on every task × model both
    ran under ``results_dir`` (their selected settings), per seed and across seeds, as text."""
    paths = sorted(Path(results_dir).glob("runs/**/result.json"))
    every = runs(collect(paths, skip_invalid=True)) if paths else pd.DataFrame(columns=CELL)
    every = every[every["method"].isin([method_a, method_b])]
    every = every[(every["model"] == model) if model else every["model"].notna()]
    every = every[(every["task"] == task) if task else every["task"].notna()]
    if every.empty:
        return f"no runs of {method_a} or {method_b} under {results_dir}"
    tidy = select_settings(every, grid_summary(every))
    cells = cell_predictions(tidy)
    blocks = []
    for (task_name, model_name), _ in tidy.groupby(["task", "model"], sort=True):
        title = f"{task_name} · {model_name}: {method_a} (A) vs {method_b} (B)"
        a, b = (cells.get((task_name, m, model_name)) for m in (method_a, method_b))
        if a is None or b is None or not a.aligns_with(b):
            blocks.append(
                f"{title}\n  no paired test: both need predictions files of every "
                "finished seed, on the same validation examples"
            )
            continue
        shared = [s for s in a.seeds if s in b.seeds]
        rows = []
        for seed in [*shared, None] if len(shared) > 1 else shared:
            result = compare(a, b, seed)
            only = result.discordant or ("", "")
            rows.append(
                {
                    "seed": "all" if seed is None else seed,
                    "A": f"{result.score_a:.4f}",
                    "B": f"{result.score_b:.4f}",
                    "A − B": f"{result.difference:+.4f}",
                    "test": result.test,
                    "only A right": only[0],
                    "only B right": only[1],
                    "p": f"{result.p_value:.3g}",
                }
            )
        table = pd.DataFrame(rows).to_string(index=False)
        blocks.append(f"{title} ({a.metric}, {len(a.references)} validation examples)\n{table}")
    return "\n\n".join(blocks)


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
