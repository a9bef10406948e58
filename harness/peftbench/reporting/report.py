"""Leaderboards from the aggregated table: GitHub-flavoured markdown with the plots as SVG files
beside it, and one self-contained HTML page (plots inlined, tables sortable by a click).

The numbers come from the pure functions of :mod:`~.aggregate`; this module formats
them into cells and renders Jinja2 templates. Every name a user chooses (methods, tasks,
models, messages) is escaped: autoescape for HTML, :func:`md_escape` for markdown, and
matplotlib's own escaping for SVG text.
"""

from __future__ import annotations

import base64
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from peftbench.planning.grid import DEFAULT_SETTING
from peftbench.plugin.metrics import METRICS, MetricKind
from peftbench.records.files import write_text_atomic
from peftbench.reporting.aggregate import (
    CHANCE_ALPHA,
    ROW,
    STATUS_TEXT,
    cell_predictions,
    column,
    grid_summary,
    method_ranking,
    overall,
    overall_intervals,
    ranked,
    runs,
    select_settings,
    task_summary,
    versus_best,
    with_intervals,
    write_table,
)
from peftbench.reporting.plots import PLOTS, fmt_count, svgs
from peftbench.reporting.stats import (
    ALPHA,
    CONFIDENCE,
    RESAMPLES,
    Ranking,
    pairwise,
)

DOCS = "../docs"
"""Where the reports link to docs/ (relative to the reports' folder, or a URL)."""

MISSING = "—"

PCT = f"{CONFIDENCE:.0%}"
GLOSSARY = {
    "score": f"Primary metric of the task on its validation split, mean over the finished "
    f"seeds, with its {PCT} confidence interval in brackets (see interval); where no interval "
    "can be made, mean ± standard deviation over seeds (± only with several seeds).",
    "interval": f"{PCT} percentile interval of a two-stage bootstrap ({RESAMPLES} resamples) "
    "from the runs' per-example predictions: each resample draws the cell's seeds with "
    "replacement and the validation examples with replacement (the same examples for every "
    "seed drawn) and averages the metric over the drawn seeds, so the interval holds both the "
    "example and the seed noise. Runs without a predictions file (older records): a single "
    "seed's accuracy (or exact match) gets the Wilson score interval on its example count, "
    "other cells none. The overall score's interval averages the cells' resampled normalised "
    "scores over tasks.",
    "seeds": "Finished seeds behind the score, of the seeds run.",
    "vs best": "Whether the row is distinguishable from its table's first row: a paired test "
    "on the same validation examples (McNemar's exact test on one seed of accuracy, else the "
    "paired bootstrap across the seeds both finished), Holm-corrected over the rows compared, "
    f"at α = {ALPHA}; the p-value shown is Holm's. Blank without predictions files.",
    "efficiency": "Normalised score per decade of trainable parameters: normalised / "
    "log10(trainable). Higher is better; read it beside the raw axes, never instead of them.",
    "average rank": "Friedman ranking of the methods: within each task × model block where "
    "every ranked method finished, the methods are ranked by normalised score (1 = best, ties "
    "averaged); the ranks are averaged over the blocks. Nemenyi's post-hoc test says which "
    f"pairs differ at α = {ALPHA}.",
    "setting": "A point of a method's hyperparameter grid. Where a grid gives several, the "
    "tables show the one with the best mean dev score: the dev split is a fixed 15% of the "
    "training data, held out from training; the validation split never takes part in the "
    "choice.",
    "normalised": "Chance-normalised score, (score − chance) / (best − chance): 0 is the "
    "majority-class predictor, 1 is perfect (best = 1 for accuracy and Matthews correlation), "
    "so tasks with different metrics average. The overall score averages it over tasks "
    "per seed (seeds where every task finished), then over seeds.",
    "above chance": f"Whether the accuracy (a generation task's exact match) beats the chance "
    "rate (the majority class's; the most frequent training answer's): a one-sided exact "
    f"binomial test on the validation examples, at level {CHANCE_ALPHA} for every finished "
    "seed (the largest p-value over seeds is shown). Blank for metrics that are not a share "
    "of examples right (Matthews correlation, ROUGE-L).",
    "win rate": "Share of the other rows that this row beats on a task (normalised score; ties "
    "count half; a run that did not finish loses), averaged over tasks.",
    "model params": "base_total: parameters of the pretrained backbone, task head excluded.",
    "trainable %": "Parameters the optimizer updates (method and task head) as a percentage of "
    "base_total.",
    "stored": "Bytes kept per task to rebuild the tuned model from the base: the method's "
    "artifact plus the trained head, as saved with safetensors.",
    "stored %": "Stored parameters (elements) as a percentage of base_total.",
    "peak memory": "Peak memory of the training phase: PyTorch's peak allocated GPU memory on a "
    "GPU, else the process's peak resident set size (CPU RSS, includes the interpreter and "
    "libraries).",
    "train tokens/s": "Non-padding tokens trained per second of wall time, warm-up steps excluded.",
}
"""Short definitions of every column (the full ones: docs/parameters.md, docs/measurement.md)."""

LM_GLOSSARY = {
    "forgetting": "Causal-LM and generation runs: tuned minus base mean next-token "
    "cross-entropy (nats/token, token-weighted) on a fixed held-out sample of general text "
    "(standard-library module docstrings); > 0: the tuning made general text less likely. Base "
    "and tuned cross-entropies: base_ce, tuned_ce in the tables' CSV files.",
    "latency": "Causal-LM and generation runs: wall seconds of generating a fixed number of new "
    "tokens greedily at batch size 1 on the first validation prompts, per new token (prefill "
    "included), in ms/token; unmerged: the model as trained, merged: after the method's merge "
    "into the base (— where the method does not merge or the base is quantized).",
    "serving tokens/s": "New tokens generated per second at batch size 1 in the same "
    "measurement as the latency (unmerged, and merged where the method merges).",
}
"""Definitions of the columns only causal-LM and generation runs fill; a report shows them
where some row has the data."""

LM_COLUMNS = (
    ("forgetting", "forgetting (Δ CE, nats/token)", "forgetting"),
    ("serve_unmerged_ms_per_token", "latency unmerged (ms/token)", "latency"),
    ("serve_merged_ms_per_token", "latency merged (ms/token)", "latency"),
    ("serve_unmerged_tokens_per_s", "serving tokens/s (unmerged)", "serving tokens/s"),
    ("serve_merged_tokens_per_s", "serving tokens/s (merged)", "serving tokens/s"),
)
"""The optional columns: summary column, header (with its unit), :data:`LM_GLOSSARY` term."""


@dataclass(frozen=True)
class Cell:
    """One table cell: its value as text, the key it sorts by (None sorts last), a note on runs
    that did not finish, and whether the text reports such runs instead of a value."""

    text: str
    sort: float | str | None = None
    note: str = ""
    failed: bool = False

    def __str__(self) -> str:
        return f"{self.text} ({self.note})" if self.note else self.text


@dataclass(frozen=True)
class Column:
    name: str
    numeric: bool = True
    help: str = ""


@dataclass(frozen=True)
class Table:
    key: str
    title: str
    description: str
    columns: list[Column]
    rows: list[list[Cell]]
    unfinished: list[str] = field(default_factory=list)


def load_table(path: str | os.PathLike) -> pd.DataFrame:
    """The aggregated table; names stay text (a method called ``NA`` or ``1`` included)."""
    names = {f"spec.{key}": str for key in ("model", "method", "task")}
    return pd.read_csv(path, dtype=names, keep_default_na=False, na_values=[""])


def fmt_score(mean: float, std: float, seeds: int) -> str:
    """``0.812`` or, over several seeds, ``0.812 ± 0.010``."""
    if seeds > 1 and not pd.isna(std):
        return f"{mean:.3f} ± {std:.3f}"
    return f"{mean:.3f}"


def fmt_interval(mean: float, low: float, high: float) -> str:
    """``0.812 [0.790, 0.834]``."""
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def fmt_bytes(value: float) -> str:
    """Bytes in binary units: ``1.4 MiB``."""
    for power, unit in ((3, "GiB"), (2, "MiB"), (1, "KiB")):
        if abs(value) >= 1024**power:
            return f"{value / 1024**power:.3g} {unit}"
    return f"{value:.0f} B"


def fmt_pct(value: float) -> str:
    return f"{value:.3g}"


def fmt_mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def fmt_sig(value: float) -> str:
    """Three significant digits, thousands grouped from 1,000: ``0.412``, ``38.1``, ``2,410``."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def fmt_delta(value: float) -> str:
    return f"{value:+.3f}"


LM_FORMATS = {"forgetting": fmt_delta}
"""How an :data:`LM_COLUMNS` value is shown (default :func:`fmt_sig`)."""


def number(value: float, fmt: Callable[[float], str], suffix: str = "") -> Cell:
    """A numeric cell, or a dash when the value was not measured."""
    if pd.isna(value):
        return Cell(MISSING)
    return Cell(fmt(value) + suffix, float(value))


def score_cell(
    mean: float,
    std: float,
    seeds: int,
    note: str,
    low: float = math.nan,
    high: float = math.nan,
) -> Cell:
    """Mean [interval], or mean (± std) without one, with a note on failed seeds; the failure
    itself when no seed finished."""
    if pd.isna(mean):
        return Cell(note or "n/a", failed=bool(note))
    if pd.isna(low):
        return Cell(fmt_score(mean, std, seeds), float(mean), note)
    return Cell(fmt_interval(mean, low, high), float(mean), note)


def seeds_cell(finished: int, run: int) -> Cell:
    """``3`` when every seed finished, else ``2/3``."""
    return Cell(str(finished) if finished == run else f"{finished}/{run}", int(finished))


def versus_cell(row: pd.Series) -> Cell:
    """:data:`GLOSSARY` "vs best": ``best``, ``yes (p=0.003)``, ``no (p=0.41)`` or a dash."""
    if row["leader"]:
        return Cell("best", 0.0)
    if pd.isna(row["vs_best_p_holm"]):
        return Cell(MISSING)
    verdict = "yes" if row["distinguishable"] else "no"
    return Cell(f"{verdict} (p={row['vs_best_p_holm']:.2g})", float(row["vs_best_p_holm"]))


def chance_cell(p_value: float) -> Cell:
    """``yes (p=0.0003)`` / ``no (p=0.21)`` for :data:`GLOSSARY` "above chance"."""
    if math.isnan(p_value):
        return Cell(MISSING)
    return Cell(f"{'yes' if p_value < CHANCE_ALPHA else 'no'} (p={p_value:.2g})", -p_value)


def name(value: str) -> Cell:
    return Cell(str(value), str(value))


def memory_header(kinds: pd.Series) -> tuple[str, bool]:
    """The memory column's title, naming the kind when every row has the same one, and whether
    each cell must name its own kind instead."""
    distinct = kinds.dropna().unique()
    if len(distinct) == 1:
        return f"peak memory ({distinct[0]})", False
    return "peak memory", len(distinct) > 1


def cost_columns(memory_title: str) -> list[Column]:
    return [
        Column("trainable %", help=GLOSSARY["trainable %"]),
        Column("stored", help=GLOSSARY["stored"]),
        Column("stored %", help=GLOSSARY["stored %"]),
        Column(memory_title, help=GLOSSARY["peak memory"]),
        Column("train tokens/s", help=GLOSSARY["train tokens/s"]),
    ]


def lm_columns(frame: pd.DataFrame) -> list[tuple[str, Column]]:
    """The :data:`LM_COLUMNS` some row of ``frame`` has a value in (none for a table of
    classification runs), as (summary column, table column)."""
    return [
        (key, Column(title, help=LM_GLOSSARY[term]))
        for key, title, term in LM_COLUMNS
        if key in frame and frame[key].notna().any()
    ]


def lm_cells(row: pd.Series, shown: list[tuple[str, Column]]) -> list[Cell]:
    return [number(row[key], LM_FORMATS.get(key, fmt_sig)) for key, _ in shown]


def cost_cells(row: pd.Series, memory_kind_in_cell: bool) -> list[Cell]:
    kind = (
        f" ({row['memory_kind']})" if memory_kind_in_cell and pd.notna(row["memory_kind"]) else ""
    )
    return [
        number(row["trainable_pct"], fmt_pct),
        number(row["stored_bytes"], fmt_bytes),
        number(row["stored_pct"], fmt_pct),
        number(row["memory_bytes"], fmt_mib, kind),
        number(row["tokens_per_s"], fmt_rate),
    ]


def overall_table(board: pd.DataFrame, summary: pd.DataFrame) -> Table:
    """Method × model, ranked by the mean normalised score over tasks, with the win rate and
    the normalised score per task."""
    tasks = sorted(summary["task"].unique())
    per_task = summary.set_index(["task", *ROW])
    memory_title, kind_in_cell = memory_header(board["memory_kind"])
    language = lm_columns(board)
    columns = [
        Column("#"),
        Column("method", numeric=False),
        Column("model", numeric=False),
        Column("model params", help=GLOSSARY["model params"]),
        Column("score (normalised)", help=GLOSSARY["normalised"] + " " + GLOSSARY["interval"]),
        Column("seeds", help="Seeds where every task finished."),
        Column("win rate", help=GLOSSARY["win rate"]),
        *[Column(task, help=f"Normalised score on {task}") for task in tasks],
        Column("efficiency", help=GLOSSARY["efficiency"]),
        *[column for _, column in language],
        *cost_columns(memory_title),
    ]
    rows = []
    for _, row in board.iterrows():
        cells = [
            Cell(str(row["rank"]), int(row["rank"])),
            name(row["method"]),
            name(row["model"]),
            number(row["base_total"], fmt_count),
            score_cell(
                row["score_mean"],
                row["score_std"],
                row["seeds"],
                row["note"],
                row["score_low"],
                row["score_high"],
            ),
            Cell(str(row["seeds"]), int(row["seeds"])),
            number(row["win_rate"], lambda v: f"{v:.2f}"),
        ]
        for task in tasks:
            key = (task, row["method"], row["model"])
            if key not in per_task.index:  # not run on this task
                cells.append(Cell(MISSING))
                continue
            cell = per_task.loc[key]
            cells.append(score_cell(cell["normalised_mean"], math.nan, 1, cell["note"]))
        cells.append(number(row["efficiency"], lambda v: f"{v:.3f}"))
        rows.append(cells + lm_cells(row, language) + cost_cells(row, kind_in_cell))
    description = (
        "Ranked by the mean over tasks of the chance-normalised primary score (0 = chance, "
        f"1 = perfect); brackets: its {PCT} confidence interval, ± where there is none: the "
        "standard deviation over seeds."
    )
    return Table("overall", "Overall", description, columns, rows)


def task_table(task: str, summary: pd.DataFrame, task_runs: pd.DataFrame, index: int) -> Table:
    """One task: method × model, best normalised score first, failed runs listed below
    (``summary`` with :func:`peftbench.reporting.aggregate.with_intervals` and
    :func:`peftbench.reporting.aggregate.versus_best` applied)."""
    order = ranked(summary)
    metric = order["metric"].dropna()
    metric_name = str(metric.iloc[0]) if len(metric) else "score"
    memory_title, kind_in_cell = memory_header(order["memory_kind"])
    language = lm_columns(order)
    gridded = bool((order["setting"] != DEFAULT_SETTING).any())
    columns = [
        Column("#"),
        Column("method", numeric=False),
        Column("model", numeric=False),
        *([Column("setting", numeric=False, help=GLOSSARY["setting"])] if gridded else []),
        Column(metric_name, help=GLOSSARY["score"] + " " + GLOSSARY["interval"]),
        Column("seeds", help=GLOSSARY["seeds"]),
        Column("normalised", help=GLOSSARY["normalised"]),
        Column("above chance", numeric=False, help=GLOSSARY["above chance"]),
        Column("vs best", numeric=False, help=GLOSSARY["vs best"]),
        *[column for _, column in language],
        *cost_columns(memory_title),
    ]
    rows = []
    for rank, (_, row) in enumerate(order.iterrows(), start=1):
        seeds, note = row["seeds_ok"], row["note"]
        rows.append(
            [
                Cell(str(rank), rank),
                name(row["method"]),
                name(row["model"]),
                *([name(row["setting"])] if gridded else []),
                score_cell(
                    row["score_mean"],
                    row["score_std"],
                    seeds,
                    note,
                    row["score_low"],
                    row["score_high"],
                ),
                seeds_cell(seeds, row["seeds"]),
                score_cell(row["normalised_mean"], row["normalised_std"], seeds, note),
                chance_cell(row["chance_p"]),
                versus_cell(row),
                *lm_cells(row, language),
                *cost_cells(row, kind_in_cell),
            ]
        )
    description = f"Primary metric: {metric_name}; {chance_text(order['chance'], metric_name)}."
    if metric_name in METRICS and METRICS[metric_name].kind == MetricKind.CONTINUOUS:
        description += (
            f" {metric_name} is a mean of per-example scores, not a share of examples right: "
            "no binomial test against the baseline, no paired test, and no confidence interval "
            "(mean ± standard deviation over seeds instead)."
        )
    return Table(
        f"task-{index}",
        task,
        description,
        columns,
        rows,
        unfinished_runs(task_runs),
    )


def ranking_table(ranking: Ranking | None) -> Table | None:
    """The methods by average rank, with Nemenyi's p-value against the first; None when the
    Friedman test could not be made."""
    if ranking is None:
        return None
    ranks = ranking.ranks.sort_values(kind="stable")
    first = ranks.index[0]
    columns = [
        Column("method", numeric=False),
        Column("average rank", help=GLOSSARY["average rank"]),
        Column("vs first (Nemenyi)", numeric=False, help=GLOSSARY["average rank"]),
    ]
    rows = []
    for method, rank in ranks.items():
        p = float(ranking.nemenyi.at[first, method])
        verdict = "first" if method == first else f"{'yes' if p < ALPHA else 'no'} (p={p:.2g})"
        rows.append([name(method), Cell(f"{rank:.2f}", float(rank)), Cell(verdict, p)])
    description = (
        f"Friedman test over {len(ranks)} methods on {ranking.blocks} task × model blocks "
        f"where all finished ({ranking.dropped} left out): p = {ranking.p_value:.2g}. Nemenyi's "
        f"critical difference at α = {ALPHA}: {ranking.critical_difference:.2f} ranks."
    )
    return Table("ranking", "Ranking across tasks", description, columns, rows)


def grid_table(grid: pd.DataFrame) -> Table | None:
    """Every setting of every gridded task × method × model with its dev and validation scores;
    ``None`` when no method has a grid."""
    if not (grid["setting"] != DEFAULT_SETTING).any():
        return None
    columns = [
        Column("task", numeric=False),
        Column("method", numeric=False),
        Column("model", numeric=False),
        Column("setting", numeric=False, help=GLOSSARY["setting"]),
        Column("dev score", help="Primary metric on the dev split, mean over seeds"),
        Column("validation score", help=GLOSSARY["score"]),
        Column("selected", numeric=False),
    ]
    rows = [
        [
            name(row["task"]),
            name(row["method"]),
            name(row["model"]),
            name(row["setting"]),
            score_cell(row["dev_mean"], math.nan, 1, ""),
            score_cell(row["score_mean"], row["score_std"], row["seeds"], row["note"]),
            Cell("✓" if row["selected"] else "", int(row["selected"])),
        ]
        for _, row in grid.iterrows()
    ]
    description = (
        "Every grid setting that ran. Per task × method × model the leaderboard keeps the "
        "setting with the best mean dev score (settings with unfinished seeds rank last); its "
        "validation score is what the tables above report."
    )
    return Table("grid", "Hyperparameter selection", description, columns, rows)


def chance_text(chance: pd.Series, metric: str) -> str:
    """The task's chance level: the majority class's, or for a generation metric the
    baseline's (always answering the most frequent training answer)."""
    values = chance.dropna().round(3).unique()
    if len(values) == 0:
        return "no finished runs"
    kind = (
        "baseline (most frequent training answer)"
        if metric in METRICS and METRICS[metric].generation
        else "chance (majority class)"
    )
    if len(values) == 1:
        return f"{kind}: {values[0]:.3f}"
    return f"{kind}: {values.min():.3f}–{values.max():.3f}"


def unfinished_runs(task_runs: pd.DataFrame) -> list[str]:
    """'method · model · seed N: status — first line of the message', one per failed run."""
    failed = task_runs[task_runs["status"] != "ok"].sort_values([*ROW, "seed"])
    lines = []
    for _, run in failed.iterrows():
        message = run["message"].strip().splitlines()[0][:200] if run["message"].strip() else ""
        setting = f" · {run['setting']}" if run["setting"] != DEFAULT_SETTING else ""
        line = f"{run['method']} · {run['model']}{setting} · seed {run['seed']}: "
        lines.append(line + STATUS_TEXT[run["status"]] + (f" — {message}" if message else ""))
    return lines


def provenance(table: pd.DataFrame) -> dict[str, str]:
    """Where the numbers come from: commits, devices, package versions, dates of the runs."""

    def distinct(values: pd.Series) -> str:
        return ", ".join(sorted(values.dropna().astype(str).unique())) or MISSING

    device = column(table, "provenance.device.type").astype(str) + ": "
    device += column(table, "provenance.device.name").astype(str)
    versions = [
        f"{name.rsplit('.', 1)[1]} {distinct(table[name])}"
        for name in sorted(table.columns)
        if name.startswith("provenance.versions.") and table[name].notna().any()
    ]
    started = pd.to_datetime(column(table, "timing.started_at"), utc=True, format="ISO8601")
    finished = pd.to_datetime(column(table, "timing.finished_at"), utc=True, format="ISO8601")
    dates = f"{started.min():%Y-%m-%d %H:%M} – {finished.max():%Y-%m-%d %H:%M} UTC"
    return {
        "git commit": distinct(column(table, "provenance.git_commit")),
        "device": distinct(device.where(column(table, "provenance.device.type").notna())),
        "versions": "; ".join(versions) or MISSING,
        "runs": dates if started.notna().any() else MISSING,
    }


MD_ESCAPES = str.maketrans(
    {c: "\\" + c for c in "\\`*_[]|~"} | {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\n": " "}
)


def md_escape(text: object) -> Markup:
    """Text shown literally in GitHub-flavoured markdown, table cells included."""
    return Markup(str(text).translate(MD_ESCAPES))


def markdown_table(table: Table) -> Markup:
    """A GitHub-flavoured markdown table (numeric columns right-aligned), every cell escaped."""
    lines = [
        "| " + " | ".join(md_escape(c.name) for c in table.columns) + " |",
        "|" + "|".join("---:" if c.numeric else ":---" for c in table.columns) + "|",
    ]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in table.rows]
    return Markup("\n".join(lines))


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("peftbench.reporting", "templates"),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True),
        keep_trailing_newline=True,
    )
    env.filters["md"] = md_escape
    env.filters["md_table"] = markdown_table
    return env


def context(table: pd.DataFrame, docs: str = DOCS) -> dict:
    """Everything both templates show, and the frames behind the tables."""
    every = runs(table)
    grid = grid_summary(every)
    tidy = select_settings(every, grid)
    cells = cell_predictions(tidy)
    summary, resampled = with_intervals(task_summary(tidy), cells)
    summary = versus_best(summary, cells)
    board = overall_intervals(overall(tidy), summary, resampled)
    ranking = method_ranking(summary)
    tasks = [
        task_table(task, summary[summary["task"] == task], tidy[tidy["task"] == task], index)
        for index, task in enumerate(sorted(tidy["task"].unique()))
    ]
    counts = every["status"].value_counts()
    overall_board = overall_table(board, summary)
    shown = {c.name for table in (overall_board, *tasks) for c in table.columns}
    language = {term for _, title, term in LM_COLUMNS if title in shown}
    return {
        "overall": overall_board,
        "tasks": tasks,
        "grid": grid_table(grid),
        "ranking": ranking_table(ranking),
        "ranking_result": ranking,
        "num_settings": int(every[["method", "setting"]].drop_duplicates().shape[0]),
        "num_runs": len(every),
        "num_ok": int(counts.get("ok", 0)),
        "unfinished": {STATUS_TEXT[c]: int(n) for c, n in counts.items() if c != "ok"},
        "sizes": {k: every[k].nunique() for k in ("method", "model", "task", "seed")},
        "glossary": GLOSSARY | {k: v for k, v in LM_GLOSSARY.items() if k in language},
        "provenance": provenance(table),
        "docs": quote(docs.rstrip("/"), safe="/:"),
        "plot_titles": PLOTS,
        "board": board,
        "summary": summary,
        "grid_frame": grid,
        "pairs": pairwise(cells),
    }


def write_reports(
    table_path: str | os.PathLike,
    markdown: str | os.PathLike,
    html: str | os.PathLike,
    plots_dir: str | os.PathLike | None = None,
    tables_dir: str | os.PathLike | None = None,
    docs: str = DOCS,
) -> None:
    """Render the leaderboards; the plots go to ``plots_dir`` (default: ``plots/`` beside the
    markdown) and, when ``tables_dir`` is given, the overall and per-task tables, the grid and
    the paired comparisons (:func:`peftbench.reporting.stats.pairwise`) as CSV."""
    page = context(load_table(table_path), docs)
    plots_dir = Path(plots_dir) if plots_dir else Path(markdown).parent / "plots"
    images = svgs(page["board"], page["ranking_result"])
    for stem, svg in images.items():
        write_text_atomic(plots_dir / f"{stem}.svg", svg)
    if tables_dir:
        write_table(page["board"], Path(tables_dir) / "overall.csv")
        write_table(page["summary"], Path(tables_dir) / "tasks.csv")
        write_table(page["grid_frame"], Path(tables_dir) / "grid.csv")
        write_table(page["pairs"], Path(tables_dir) / "pairs.csv")
    relative = Path(os.path.relpath(plots_dir, Path(markdown).parent)).as_posix()
    env = environment()
    plot_files = {stem: quote(f"{relative}/{stem}.svg") for stem in images}
    write_text_atomic(
        markdown, env.get_template("leaderboard.md.j2").render(**page, plots=plot_files)
    )
    inline = {stem: base64.b64encode(svg.encode()).decode() for stem, svg in images.items()}
    write_text_atomic(html, env.get_template("leaderboard.html.j2").render(**page, plots=inline))
