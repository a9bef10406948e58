"""Leaderboards from the aggregated table: GitHub-flavoured markdown and one static HTML file.

Tables are built with pandas and rendered with Jinja2 templates (HTML autoescaped: method, task
and model names are user input)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

STATUS_TEXT = {
    "oom": "out of memory",
    "unsupported": "unsupported",
    "diverged": "diverged",
    "failed": "failed",
}


def load_table(path: str | os.PathLike) -> pd.DataFrame:
    return pd.read_csv(path)


def score_cell(row: pd.Series) -> str:
    """The primary score, or what happened instead (never a zero for a run that did not finish)."""
    if row["status.code"] != "ok":
        return STATUS_TEXT[row["status.code"]]
    value = row[f"metrics.values.{row['metrics.primary']}"]
    return f"{value:.3f}"


def chance_cell(row: pd.Series) -> str:
    if row["status.code"] != "ok":
        return ""
    return f"{row['metrics.chance.' + row['metrics.primary']]:.3f}"


def run_rows(table: pd.DataFrame) -> pd.DataFrame:
    """One display row per run: names, score, chance, parameter share, speed and memory."""
    rows = pd.DataFrame(
        {
            "task": table["spec.task"],
            "model": table["spec.model"],
            "method": table["spec.method"],
            "seed": table["spec.seed"],
            "status": table["status.code"],
            "metric": table["metrics.primary"].fillna(""),
            "score": table.apply(score_cell, axis=1),
            "chance": table.apply(chance_cell, axis=1),
            "trainable %": (100 * table["params.trainable"] / table["params.base_total"]).map(
                _fmt_pct
            ),
            "train samples/s": table.get(
                "throughput.train_samples_per_s", pd.Series(dtype=float)
            ).map(_fmt_num),
            "train peak RSS (MiB)": (
                table.get("memory.train_cpu_peak_rss_bytes", pd.Series(dtype=float)) / 2**20
            ).map(_fmt_num),
        }
    )
    return rows.sort_values(["task", "model", "method", "seed"]).reset_index(drop=True)


def _fmt_pct(value: float) -> str:
    return "" if pd.isna(value) else f"{value:.3g}"


def _fmt_num(value: float) -> str:
    return "" if pd.isna(value) else f"{value:.1f}"


def environment() -> Environment:
    return Environment(
        loader=PackageLoader("peftbench", "templates"),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True),
        keep_trailing_newline=True,
    )


def write_reports(
    table_path: str | os.PathLike, markdown: str | os.PathLike, html: str | os.PathLike
) -> None:
    table = load_table(table_path)
    rows = run_rows(table)
    tasks = {task: group.drop(columns="task") for task, group in rows.groupby("task", sort=True)}
    context = {
        "tasks": tasks,
        "num_runs": len(rows),
        "num_ok": int((table["status.code"] == "ok").sum()),
    }
    env = environment()
    _write(
        markdown, env.get_template("leaderboard.md.j2").render(**context, md_table=_markdown_table)
    )
    _write(html, env.get_template("leaderboard.html.j2").render(**context))


def _markdown_table(frame: pd.DataFrame) -> str:
    cells = frame.astype(str).map(lambda s: s.replace("|", "\\|"))
    return cells.to_markdown(index=False)


def _write(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
