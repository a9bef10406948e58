"""Leaderboard plots as SVG (matplotlib's object API: no display, no global pyplot state).

The Pareto and scaling plots take the overall leaderboard (:func:`~.aggregate.overall`:
one point per method × model, ``score_mean`` the mean chance-normalised score over tasks) and
draw the methods in colour, the models as markers. The critical-difference diagram takes the
Friedman/Nemenyi ranking of the methods (:func:`~.stats.friedman_nemenyi`) and is drawn
by scikit-posthocs.
"""

from __future__ import annotations

import io
from itertools import cycle

import matplotlib
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from peftbench.reporting.aggregate import pareto_front
from peftbench.reporting.stats import ALPHA, Ranking

PLOTS = {
    "pareto-trainable": "Score vs trainable parameters",
    "pareto-memory": "Score vs peak training memory",
    "pareto-throughput": "Score vs training throughput",
    "scaling": "Score vs model size",
    "cd-diagram": "Critical-difference diagram: methods' average ranks",
}
"""File stem -> title of every plot the leaderboards show."""

SCORE_LABEL = "mean normalised score (0 = chance, 1 = perfect)"
MARKERS = "osD^vPX*<>"
STYLE = {"svg.fonttype": "none", "svg.hashsalt": "peftbench", "font.size": 9}
"""SVG text as text (small, searchable) and stable element ids (identical input, identical file)."""


def label(value: object) -> str:
    """A name as matplotlib shows it literally: ``$`` is not mathtext, ``_x`` is not hidden."""
    shown = str(value).replace("$", r"\$")
    return "\u200b" + shown if shown.startswith("_") else shown


def styles(points: pd.DataFrame) -> tuple[dict[str, str], dict[str, str]]:
    """A colour per method and a marker per model (models ordered by size)."""
    methods = sorted(points["method"].unique())
    colours = matplotlib.colormaps["tab10" if len(methods) <= 10 else "tab20"].colors
    models = points.sort_values(["base_total", "model"])["model"].unique()
    colour = {m: matplotlib.colors.to_hex(c) for m, c in zip(methods, cycle(colours))}
    return colour, dict(zip(models, cycle(MARKERS)))


def fmt_count(value: float) -> str:
    """A parameter count with a metric prefix: ``22.7M``."""
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.0f}"


def _legend(ax: Axes, colour: dict[str, str], marker: dict[str, str], models: bool) -> None:
    front = [Line2D([], [], color="0.3", ls="--", lw=1, label="Pareto front")] if models else []
    handles = front + [
        Line2D([], [], color=c, marker="o", ls="", label=label(m)) for m, c in colour.items()
    ]
    if models:
        handles += [
            Line2D([], [], color="0.4", marker=k, ls="", label=label(m)) for m, k in marker.items()
        ]
    if colour:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)


def _figure(title: str) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = figure.add_subplot()
    ax.set_title(title)
    ax.set_ylabel(SCORE_LABEL)
    ax.grid(alpha=0.3)
    ax.margins(x=0.1, y=0.08)  # room for the labels of the outermost points
    return figure, ax


def _nothing_to_show(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=ax.transAxes)


def pareto_plot(
    points: pd.DataFrame, x: str, xlabel: str, title: str, log_x: bool, minimize_x: bool = True
) -> Figure:
    """Score against one cost, every method × model a point, the Pareto front drawn and labelled."""
    figure, ax = _figure(title)
    ax.set_xlabel(xlabel)
    shown = points.dropna(subset=[x, "score_mean"])
    colour, marker = styles(points)
    if shown.empty:
        _nothing_to_show(ax)
    for row in shown.itertuples():
        ax.scatter(
            getattr(row, x), row.score_mean, color=colour[row.method], marker=marker[row.model]
        )
    front = shown[pareto_front(shown[x], shown["score_mean"], minimize_x)].sort_values(x)
    ax.step(
        front[x],
        front["score_mean"],
        where="post" if minimize_x else "pre",
        color="0.3",
        ls="--",
        lw=1,
    )
    for point, same in front.groupby([x, "score_mean"], sort=False):  # one label per point
        ax.annotate(
            "\n".join(
                label(f"{m} · {n}") for m, n in zip(same["method"], same["model"], strict=True)
            ),
            point,
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=7,
        )
    if log_x and not shown.empty:
        ax.set_xscale("log")
    _legend(ax, colour, marker, models=True)
    return figure


def scaling_plot(points: pd.DataFrame) -> Figure:
    """Score against backbone size, one line per method (error bars: std over seeds)."""
    figure, ax = _figure(PLOTS["scaling"])
    ax.set_xlabel("model: backbone parameters (base_total, log scale)")
    shown = points.dropna(subset=["base_total", "score_mean"]).sort_values("base_total")
    colour, marker = styles(points)
    if shown.empty:
        _nothing_to_show(ax)
    else:
        ax.set_xscale("log")
        sizes = shown.groupby("base_total")["model"].unique()
        labels = [
            f"{label(', '.join(models))}\n{fmt_count(size)}" for size, models in sizes.items()
        ]
        ax.set_xticks(sizes.index, labels)
        ax.minorticks_off()
    for method, line in shown.groupby("method"):
        ax.errorbar(
            line["base_total"],
            line["score_mean"],
            yerr=line["score_std"].fillna(0).to_numpy(),
            color=colour[method],
            marker="o",
            capsize=3,
        )
    _legend(ax, colour, marker, models=False)
    return figure


def cd_diagram(ranking: Ranking | None) -> Figure:
    """Demšar's critical-difference diagram: average ranks of the methods over task × model
    blocks (1 = best), a bar joining methods the Nemenyi test cannot tell apart at
    :data:`ALPHA`, and the critical difference drawn above the axis."""
    from scikit_posthocs import critical_difference_diagram

    figure = Figure(figsize=(6.4, 3.0), layout="constrained")
    ax = figure.add_subplot()
    if ranking is None:
        ax.set_title(PLOTS["cd-diagram"])
        ax.set_axis_off()
        ax.text(
            0.5,
            0.5,
            "needs 3 or more methods finished on 2 or more task × model blocks",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        return figure
    names = {method: label(method) for method in ranking.ranks.index}
    significance = ranking.nemenyi.rename(index=names, columns=names)
    critical_difference_diagram(
        ranking.ranks.rename(index=names),
        significance,
        cd=ranking.critical_difference,
        alpha=ALPHA,
        ax=ax,
    )
    ax.set_title(
        f"Average rank over {ranking.blocks} task × model blocks (1 = best); "
        f"Friedman p = {ranking.p_value:.2g}\n"
        f"bars: not distinguishable (Nemenyi, α = {ALPHA})",
        fontsize=8,
    )
    return figure


def figures(points: pd.DataFrame, ranking: Ranking | None) -> dict[str, Figure]:
    """Every plot in ``PLOTS``: from the overall leaderboard, and the methods' ranking."""
    kinds = points["memory_kind"].dropna().unique()
    memory_kind = kinds[0] if len(kinds) == 1 else "GPU peak allocated, else CPU peak RSS"
    points = points.assign(memory_mib=points["memory_bytes"] / 2**20)
    return {
        "pareto-trainable": pareto_plot(
            points,
            "trainable",
            "trainable parameters (log scale)",
            PLOTS["pareto-trainable"],
            log_x=True,
        ),
        "pareto-memory": pareto_plot(
            points,
            "memory_mib",
            f"training peak memory, MiB ({memory_kind})",
            PLOTS["pareto-memory"],
            log_x=False,
        ),
        "pareto-throughput": pareto_plot(
            points,
            "tokens_per_s",
            "training throughput, tokens/s",
            PLOTS["pareto-throughput"],
            log_x=False,
            minimize_x=False,
        ),
        "scaling": scaling_plot(points),
        "cd-diagram": cd_diagram(ranking),
    }


def to_svg(figure: Figure) -> str:
    """The figure as a standalone SVG document (no date: identical input, identical file)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def svgs(points: pd.DataFrame, ranking: Ranking | None) -> dict[str, str]:
    """Every plot in ``PLOTS`` as SVG text."""
    with matplotlib.rc_context(STYLE):
        return {name: to_svg(figure) for name, figure in figures(points, ranking).items()}
