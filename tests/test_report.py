"""Leaderboards: the pure table functions, escaping, failures shown as text, the rendered files,
and Snakemake's own report on a tiny sweep."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from peftbench.records.predictions import write_predictions
from peftbench.records.record import validate_record, write_record
from peftbench.reporting.aggregate import (
    above_chance_p,
    cell_predictions,
    collect,
    compare_methods,
    failure_note,
    flatten,
    grid_summary,
    normalise,
    overall,
    pareto_front,
    peak_memory,
    runs,
    select_settings,
    task_summary,
    win_rates,
    with_intervals,
    write_table,
)
from peftbench.reporting.plots import PLOTS
from peftbench.reporting.report import fmt_score, md_escape, write_reports
from peftbench.reporting.stats import wilson_interval
from tests.conftest import run_snakemake

EVIL = "<script>alert(1)</script>"
BASE_TOTAL = {"minilm-l2": 15_600_000, "minilm-l4": 19_200_000, "minilm-l6": 22_700_000}
METRIC = {"docstring-match": ("accuracy", 0.5), "glue/cola": ("matthews_correlation", 0.0)}
TRAINABLE_SHARE = {"full": 1.0, "bitfit": 0.001, "lora": 0.003, EVIL: 0.02}


def make_record(
    model: str,
    method: str,
    task: str,
    seed: int,
    status: str = "ok",
    score: float | None = None,
    message: str = "",
    setting: str = "default",
    dev_score: float | None = None,
) -> dict:
    """A schema-valid result record with plausible numbers (no training)."""
    metric, chance = METRIC[task]
    base = BASE_TOTAL[model]
    trainable = int(base * TRAINABLE_SHARE.get(method, 0.01)) + 770
    size = list(BASE_TOTAL).index(model)
    if score is None:
        score = chance + (0.2 + 0.05 * size + 0.1 * (method == "full") + 0.01 * seed)
    record = {
        "schema_version": "1.1",
        "run_id": f"{model}/{method}/{task}/{setting}/seed{seed}",
        "spec": {
            "model": model,
            "method": method,
            "task": task,
            "seed": seed,
            "hparams": {"steps": 3, "lr": 1e-4},
            "data_dir": None,
            "setting": setting,
        },
        "status": {"code": status, "message": message},
        "params": {
            "base_total": base,
            "trainable": trainable,
            "trainable_pct": 100 * trainable / base,
            "stored": trainable,
            "stored_bytes": 4 * trainable + 512,
            "stored_pct": 100 * trainable / base,
        },
        "metrics": {},
        "memory": {"train_cpu_peak_rss_bytes": (600 + 40 * size) * 2**20 + trainable * 16},
        "throughput": {
            "train_tokens_per_s": 2000 / (1 + size) / (3 if method == "full" else 1),
            "train_samples_per_s": 30.0,
        },
        "timing": {
            "started_at": f"2026-01-0{seed + 1}T10:00:00+00:00",
            "finished_at": f"2026-01-0{seed + 1}T10:05:00+00:00",
        },
        "training": {"losses": [0.7, 0.6]},
        "provenance": {
            "command": "peftbench run",
            "versions": {"python": "3.11.2", "torch": "2.13.0", "peftbench": "0.1.0"},
            "device": {"type": "cpu", "id": "cpu", "name": "x86_64", "threads": 1},
            "git_commit": "0123456789abcdef0123456789abcdef01234567",
            "code_hash": "abc",
            "data_fingerprint": "def",
            "model_fingerprint": "123",
        },
    }
    if status == "ok":
        record["metrics"] = {
            "primary": metric,
            "split": "validation",
            "num_examples": 32,
            "values": {metric: score},
            "chance": {metric: chance},
            "dev": {
                "num_examples": 16,
                "values": {metric: score if dev_score is None else dev_score},
            },
        }
    validate_record(record)
    return record


def table_of(records: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([flatten(r) for r in records])


def write_run(folder: Path, record: dict, examples: int = 100) -> Path:
    """``record`` under ``folder/runs/<run_id>/``, a finished run's with a predictions file on
    ``examples`` examples that gives its score (accuracy rounded to a whole example; the
    Matthews correlation replaced by that of the predictions)."""
    run_dir = folder / "runs" / record["run_id"]
    if record["status"]["code"] == "ok":
        values = record["metrics"]["values"]
        metric = record["metrics"]["primary"]
        references = np.arange(examples) % 2
        share = values[metric] if metric == "accuracy" else (1 + values[metric]) / 2
        rng = np.random.default_rng(zlib.crc32(record["run_id"].encode()))
        correct = np.zeros(examples, dtype=bool)
        correct[rng.permutation(examples)[: round(share * examples)]] = True
        predictions = np.where(correct, references, 1 - references)
        values[metric] = (
            float(correct.mean())
            if metric == "accuracy"
            else float(np.corrcoef(predictions, references)[0, 1])
        )
        record["metrics"]["num_examples"] = examples
        write_predictions(run_dir, record["run_id"], predictions.tolist(), references.tolist())
    write_record(run_dir / "result.json", record)
    return run_dir / "result.json"


def synthetic_table(folder: Path | None = None) -> pd.DataFrame:
    """3 models × 4 methods (one named like an XSS probe) × 2 tasks × 2 seeds, with runs that
    ran out of memory, were unsupported or failed; with a ``folder``, written there as runs
    with predictions files and read back."""
    failures = {
        ("minilm-l6", "full", "glue/cola", 1): ("oom", "CUDA out of memory. Tried to allocate"),
        ("minilm-l2", EVIL, "docstring-match", 0): ("unsupported", f"{EVIL} | needs a GPU"),
        ("minilm-l2", EVIL, "docstring-match", 1): ("unsupported", f"{EVIL} | needs a GPU"),
        ("minilm-l4", "bitfit", "docstring-match", 0): ("failed", "ValueError: bad\ntraceback"),
    }
    records = []
    for model in BASE_TOTAL:
        for method in TRAINABLE_SHARE:
            for task in METRIC:
                for seed in (0, 1):
                    status, message = failures.get((model, method, task, seed), ("ok", ""))
                    records.append(make_record(model, method, task, seed, status, None, message))
    if folder is None:
        return table_of(records)
    return collect([write_run(folder, record) for record in records])


def write_synthetic(folder: Path, predictions: bool = False) -> dict[str, Path]:
    """The synthetic table rendered: csv, markdown, html, plots/ and tables/ in ``folder``; with
    ``predictions``, from runs that kept their predictions files."""
    paths = {
        "csv": folder / "leaderboard.csv",
        "markdown": folder / "reports" / "leaderboard.md",
        "html": folder / "reports" / "leaderboard.html",
        "tables": folder / "reports" / "tables",
    }
    write_table(synthetic_table(folder / "results" if predictions else None), paths["csv"])
    write_reports(
        paths["csv"], paths["markdown"], paths["html"], tables_dir=paths["tables"], docs="../docs"
    )
    return paths


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path]:
    return write_synthetic(tmp_path_factory.mktemp("reports"))


@pytest.fixture(scope="module")
def rendered_with_predictions(tmp_path_factory) -> dict[str, Path]:
    return write_synthetic(tmp_path_factory.mktemp("predicted"), predictions=True)


def test_normalise_maps_chance_to_zero_and_best_to_one():
    score = pd.Series([0.75, 0.5, 1.0, 0.4, 0.9])
    chance = pd.Series([0.5, 0.5, 0.5, 0.0, 1.0])
    result = normalise(score, chance, 1.0)
    assert result.iloc[:4].tolist() == pytest.approx([0.5, 0.0, 1.0, 0.4])
    assert math.isnan(result.iloc[4])  # chance already perfect: nothing to normalise by


def test_above_chance_is_an_exact_one_sided_binomial_test():
    # P(X >= 60 | n=100, p=0.5) = 0.028444 (binomial tail); 50/100 is chance itself.
    accuracy = pd.Series([0.6, 0.5, 0.6, 0.3, 0.9])
    chance = pd.Series([0.5, 0.5, 0.5, 0.0, 0.5])
    examples = pd.Series([100, 100, 100, 100, np.nan])
    metric = pd.Series(["accuracy"] * 3 + ["matthews_correlation", "accuracy"])
    p = above_chance_p(accuracy, chance, examples, metric)
    assert p[0] == pytest.approx(0.028444, abs=1e-6)
    assert p[1] == pytest.approx(0.539795, abs=1e-6)  # P(X >= 50): half the mass and the mode
    assert p[2] == p[0]
    assert p[3:].isna().all()  # not accuracy; no example count


def test_task_tables_say_whether_each_cell_beats_chance(tmp_path):
    records = [
        make_record("minilm-l2", "lora", "docstring-match", 0, score=0.8),
        make_record("minilm-l2", "bitfit", "docstring-match", 0, score=0.5),
        make_record("minilm-l2", "bitfit", "docstring-match", 1, score=0.9),
        make_record("minilm-l2", "lora", "glue/cola", 0, score=0.3),
    ]
    summary = task_summary(runs(table_of(records))).set_index(["task", "method"])
    # 32 examples at chance 0.5: 26/32 right has p = 0.00027; 16/32 has p = 0.57.
    assert summary.at[("docstring-match", "lora"), "chance_p"] < 0.001
    assert summary.at[("docstring-match", "bitfit"), "chance_p"] > 0.5  # the worse seed counts
    assert np.isnan(summary.at[("glue/cola", "lora"), "chance_p"])
    csv = tmp_path / "leaderboard.csv"
    write_table(table_of(records), csv)
    md = tmp_path / "leaderboard.md"
    write_reports(csv, md, tmp_path / "leaderboard.html", tables_dir=tmp_path / "tables")
    section = md.read_text().split("## docstring-match")[1].split("\n## ")[0]
    rows = {line.split(" | ")[1]: line for line in section.splitlines() if "minilm-l2" in line}
    assert "| yes (p=0.00027) |" in rows["lora"] and "| no (p=0.57) |" in rows["bitfit"]


def test_runs_normalises_accuracy_and_mcc_alike_and_drops_failed_scores():
    table = table_of(
        [
            make_record("minilm-l2", "lora", "docstring-match", 0, score=0.75),
            make_record("minilm-l2", "lora", "glue/cola", 0, score=0.25),
            make_record("minilm-l2", "full", "glue/cola", 0, status="oom", message="oom"),
        ]
    )
    tidy = runs(table)
    assert tidy["normalised"].iloc[:2].tolist() == pytest.approx([0.5, 0.25])
    assert tidy[["score", "normalised", "memory_bytes", "tokens_per_s"]].iloc[2].isna().all()
    assert tidy["trainable"].iloc[2] > 0  # counted before the failure: still shown


def test_win_rates_average_over_tasks_with_ties_and_missing_scores():
    scores = pd.DataFrame(
        {"a": [0.9, 0.5, 0.5, math.nan], "b": [0.1, 0.8, math.nan, math.nan]},
        index=["x", "y", "z", "w"],
    )
    rates = win_rates(scores)
    # task a: x beats 3; y ties z, beats w; z ties y, beats w; w loses to all.
    # task b: y beats 3; x beats 2 (z, w missing); z and w tie and lose to the others.
    assert rates["x"] == pytest.approx((3 / 3 + 2 / 3) / 2)
    assert rates["y"] == pytest.approx((1.5 / 3 + 3 / 3) / 2)
    assert rates["z"] == pytest.approx((1.5 / 3 + 0.5 / 3) / 2)
    assert math.isnan(rates["w"])  # nothing finished: no win rate
    assert win_rates(scores.iloc[:1]).isna().all()


def test_pareto_front_keeps_the_undominated_points():
    points = pd.DataFrame(
        {
            "cost": [1.0, 2.0, 3.0, 2.0, 0.5, math.nan, 3.0],
            "score": [0.5, 0.7, 0.9, 0.6, 0.2, 1.0, 0.9],
        }
    )
    front = pareto_front(points["cost"], points["score"])
    assert front.tolist() == [True, True, True, False, True, False, True]
    # Maximised x (throughput): high cost is now good, so (3, 0.9) dominates everything.
    faster = pareto_front(points["cost"], points["score"], minimize_x=False)
    assert faster.tolist() == [False, False, True, False, False, False, True]


def test_peak_memory_prefers_gpu_and_names_its_kind():
    table = pd.DataFrame(
        {
            "memory.train_cpu_peak_rss_bytes": [100.0, 200.0, math.nan],
            "memory.train_gpu_peak_allocated_bytes": [math.nan, 50.0, math.nan],
        }
    )
    memory, kind = peak_memory(table)
    assert memory.iloc[:2].tolist() == [100.0, 50.0] and math.isnan(memory.iloc[2])
    assert kind.iloc[:2].tolist() == ["CPU peak RSS", "GPU peak allocated"]
    assert pd.isna(kind.iloc[2])
    memory, kind = peak_memory(pd.DataFrame(index=[0]))  # a column nobody wrote
    assert memory.isna().all() and kind.isna().all()


def test_failure_note():
    assert failure_note(pd.Series(["ok", "ok"])) == ""
    assert failure_note(pd.Series(["oom", "oom"])) == "out of memory"
    assert failure_note(pd.Series(["ok", "oom", "failed"])) == "1/3 failed, 1/3 out of memory"


def test_mean_and_std_over_seeds():
    table = table_of(
        [
            make_record("minilm-l2", "lora", "docstring-match", 0, score=0.7),
            make_record("minilm-l2", "lora", "docstring-match", 1, score=0.9),
            make_record("minilm-l2", "lora", "docstring-match", 2, score=0.8),
        ]
    )
    row = task_summary(runs(table)).iloc[0]
    assert row["score_mean"] == pytest.approx(0.8)
    assert row["score_std"] == pytest.approx(0.1)
    assert row["normalised_mean"] == pytest.approx(0.6)
    assert fmt_score(row["score_mean"], row["score_std"], row["seeds_ok"]) == "0.800 ± 0.100"
    assert fmt_score(0.8, math.nan, 1) == "0.800"


def test_overall_counts_only_seeds_where_every_task_finished():
    records = [
        make_record("minilm-l2", "lora", "docstring-match", 0, score=0.75),  # 0.5
        make_record("minilm-l2", "lora", "glue/cola", 0, score=0.3),  # 0.3
        make_record("minilm-l2", "lora", "docstring-match", 1, score=1.0),  # 1.0
        make_record("minilm-l2", "lora", "glue/cola", 1, status="failed", message="x"),
        make_record("minilm-l2", "full", "docstring-match", 0, status="unsupported"),
        make_record("minilm-l2", "full", "glue/cola", 0, status="unsupported"),
    ]
    board = overall(runs(table_of(records))).set_index("method")
    assert board.loc["lora", "score_mean"] == pytest.approx(0.4)
    assert board.loc["lora", "seeds"] == 1 and math.isnan(board.loc["lora", "score_std"])
    assert board.loc["lora", "note"] == "1/4 failed"
    assert board.loc["lora", "win_rate"] == 1.0
    assert board.loc["full", "note"] == "unsupported"
    assert math.isnan(board.loc["full", "score_mean"])
    assert board["rank"].tolist() == [1, 2] and board.index.tolist() == ["lora", "full"]


def grid_runs(cells: dict[tuple[str, int], tuple[str, float | None, float | None]]):
    """LoRA on minilm-l2 × docstring-match: (setting, seed) -> (status, dev, validation)."""
    records = []
    for (setting, seed), (status, dev, score) in cells.items():
        records.append(
            make_record(
                "minilm-l2", "lora", "docstring-match", seed, status, score, "", setting, dev
            )
        )
    return runs(table_of(records))


def test_the_setting_with_the_best_dev_score_is_selected_not_the_best_validation_score():
    tidy = grid_runs(
        {
            ("lr=0.001", 0): ("ok", 0.70, 0.90),
            ("lr=0.001", 1): ("ok", 0.72, 0.88),
            ("lr=0.005", 0): ("ok", 0.80, 0.60),
            ("lr=0.005", 1): ("ok", 0.78, 0.62),
        }
    )
    grid = grid_summary(tidy).set_index("setting")
    assert grid.loc["lr=0.005", "selected"] and not grid.loc["lr=0.001", "selected"]
    assert grid.loc["lr=0.005", "dev_mean"] == pytest.approx(0.79)
    assert grid.loc["lr=0.001", "score_mean"] == pytest.approx(0.89)
    assert (grid["settings"] == 2).all()
    kept = select_settings(tidy, grid_summary(tidy))
    assert set(kept["setting"]) == {"lr=0.005"} and len(kept) == 2
    summary = task_summary(kept).iloc[0]
    assert summary["setting"] == "lr=0.005"
    assert summary["score_mean"] == pytest.approx(0.61)
    assert summary["score_std"] == pytest.approx(math.sqrt(0.0002))


def test_a_setting_with_an_unfinished_seed_ranks_below_complete_ones_ties_go_first():
    tidy = grid_runs(
        {
            ("a", 0): ("ok", 0.6, 0.6),
            ("a", 1): ("ok", 0.6, 0.6),
            ("b", 0): ("ok", 0.9, 0.9),
            ("b", 1): ("diverged", None, None),
            ("c", 0): ("ok", 0.6, 0.7),
            ("c", 1): ("ok", 0.6, 0.7),
        }
    )
    grid = grid_summary(tidy).set_index("setting")
    assert list(grid.index[grid["selected"]]) == ["a"]
    assert grid.loc["b", "note"] == "1/2 diverged"


def test_a_cell_where_every_setting_failed_keeps_one_setting_to_show_the_failure():
    tidy = grid_runs({("a", 0): ("unsupported", None, None), ("b", 0): ("oom", None, None)})
    kept = select_settings(tidy, grid_summary(tidy))
    assert list(kept["setting"]) == ["a"] and list(kept["status"]) == ["unsupported"]


def test_records_of_schema_1_0_read_as_the_default_setting_without_dev_scores():
    record = make_record("minilm-l2", "lora", "docstring-match", 0)
    record["schema_version"] = "1.0"
    record["run_id"] = "minilm-l2/lora/docstring-match/seed0"
    del record["spec"]["setting"], record["metrics"]["dev"]
    validate_record(record)
    tidy = runs(table_of([record]))
    assert tidy.loc[0, "setting"] == "default" and math.isnan(tidy.loc[0, "dev_score"])
    assert select_settings(tidy, grid_summary(tidy))["score"].tolist() == tidy["score"].tolist()


def test_grid_section_shows_every_setting_and_the_selected_one(tmp_path):
    records = [
        make_record("minilm-l2", "lora", "docstring-match", 0, "ok", 0.9, "", "lr=0.001", 0.5),
        make_record("minilm-l2", "lora", "docstring-match", 0, "ok", 0.6, "", "lr=0.005", 0.8),
        make_record("minilm-l2", "full", "docstring-match", 0, "ok", 0.7, "", "default", 0.7),
    ]
    write_table(table_of(records), tmp_path / "table.csv")
    write_reports(
        tmp_path / "table.csv", tmp_path / "lb.md", tmp_path / "lb.html", tables_dir=tmp_path
    )
    markdown = (tmp_path / "lb.md").read_text()
    selection = markdown.split("## Hyperparameter selection")[1]
    assert "| docstring-match | lora | minilm-l2 | lr=0.005 | 0.800 | 0.600 | ✓ |" in selection
    assert "| docstring-match | lora | minilm-l2 | lr=0.001 | 0.500 | 0.900 |  |" in selection
    task_section = markdown.split("## docstring-match")[1].split("##")[0]
    assert "lr=0.005" in task_section and "0.900" not in task_section
    assert "(3 hyperparameter settings)" in markdown
    grid = pd.read_csv(tmp_path / "grid.csv")
    assert grid["selected"].sum() == 2 and len(grid) == 3
    assert 'id="grid"' in (tmp_path / "lb.html").read_text()


def test_md_escape():
    assert md_escape("a|b") == "a\\|b"
    assert md_escape(EVIL) == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert md_escape("p_tuning *x* [l](u) `c`") == "p\\_tuning \\*x\\* \\[l\\](u) \\`c\\`"
    assert md_escape("two\nlines") == "two lines"


def test_user_names_are_escaped_everywhere(rendered):
    html = rendered["html"].read_text()
    markdown = rendered["markdown"].read_text()
    assert EVIL not in html and EVIL not in markdown
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markdown
    assert html.count("<script") == 1  # the page's own sorting script
    for path in (rendered["markdown"].parent / "plots").glob("*.svg"):
        svg = path.read_text()
        assert "<script" not in svg
        ET.fromstring(svg)  # well-formed: escaped names cannot break out of the markup


def test_markdown_tables_keep_their_shape(rendered):
    """Every row of every table has the header's number of cells (escaped ``|`` included)."""
    markdown = rendered["markdown"].read_text()
    tables = [block for block in markdown.split("\n\n") if block.startswith("| #")]
    assert len(tables) == 3  # overall + 2 tasks
    for block in tables:
        widths = {line.replace("\\|", "").count("|") for line in block.splitlines()}
        assert len(widths) == 1, block


def test_failed_cells_are_text_never_zero(rendered):
    markdown = rendered["markdown"].read_text()
    # docstring-match: unsupported on both seeds; in the overall table: 2 of 4 runs.
    evil_l2 = [
        line for line in markdown.splitlines() if f"| {md_escape(EVIL)} | minilm-l2 |" in line
    ]
    assert len(evil_l2) == 3
    assert "| unsupported | 0/2 | unsupported |" in evil_l2[1] and "0.000" not in evil_l2[1]
    assert "| 2/4 unsupported |" in evil_l2[0] and "| unsupported |" in evil_l2[0]
    assert "| bitfit | minilm-l4 | 0.7" in markdown  # one failed seed: the other one is shown
    assert "(1/2 failed)" in markdown
    assert "out of memory" in markdown
    assert "- bitfit · minilm-l4 · seed 0: failed — ValueError: bad" in markdown
    html = rendered["html"].read_text()
    assert '<td class="num unfinished">unsupported</td>' in html
    assert '0.400<br><small class="unfinished">1/2 out of memory</small>' in html


def test_rendered_files(rendered):
    plots = rendered["markdown"].parent / "plots"
    assert sorted(p.stem for p in plots.glob("*.svg")) == sorted(PLOTS)
    markdown = rendered["markdown"].read_text()
    for stem in PLOTS:
        assert f"(plots/{stem}.svg)" in markdown
    html = rendered["html"].read_text()
    assert html.count('src="data:image/svg+xml;base64,') == len(PLOTS)
    assert "http://" not in html and "https://" not in html.replace("http://www.w3.org", "")
    assert 'href="../docs/parameters.md"' in html
    assert "0123456789abcdef0123456789abcdef01234567" in html  # provenance footer
    assert "2026-01-01 10:00 – 2026-01-02 10:05 UTC" in html
    board = pd.read_csv(rendered["tables"] / "overall.csv")
    assert len(board) == 12 and board["rank"].tolist() == list(range(1, 13))
    assert board.iloc[0]["method"] == "full"


def test_missing_columns_render_as_dashes(tmp_path):
    table = table_of([make_record("minilm-l2", "lora", "docstring-match", 0)])
    table = table.drop(columns=[c for c in table if c.startswith(("memory.", "throughput."))])
    table = table.drop(columns=["params.stored", "params.stored_bytes", "params.stored_pct"])
    write_table(table, tmp_path / "t.csv")
    write_reports(tmp_path / "t.csv", tmp_path / "l.md", tmp_path / "l.html")
    row = next(line for line in (tmp_path / "l.md").read_text().splitlines() if "| lora" in line)
    assert row.endswith("| — | — | — | — |")


def test_a_row_not_run_on_every_task(tmp_path):
    records = [make_record("minilm-l2", "lora", task, 0) for task in METRIC]
    records.append(make_record("minilm-l2", "full", "glue/cola", 0))
    write_table(table_of(records), tmp_path / "t.csv")
    write_reports(tmp_path / "t.csv", tmp_path / "l.md", tmp_path / "l.html")
    row = next(line for line in (tmp_path / "l.md").read_text().splitlines() if "| full" in line)
    # No overall score; wins on glue/cola, loses on docstring-match (not run).
    assert "| n/a | 0 | 0.50 | — | 0.300 |" in row


def test_names_that_look_like_missing_values_stay_names(tmp_path):
    table = table_of([make_record("minilm-l2", "NA", "docstring-match", 0)])
    write_table(table, tmp_path / "t.csv")
    write_reports(tmp_path / "t.csv", tmp_path / "l.md", tmp_path / "l.html")
    assert "| NA | minilm-l2 |" in (tmp_path / "l.md").read_text()


def test_plots_are_reproducible(tmp_path, rendered):
    again = write_synthetic(tmp_path)
    for stem in PLOTS:
        first = (rendered["markdown"].parent / "plots" / f"{stem}.svg").read_bytes()
        assert (again["markdown"].parent / "plots" / f"{stem}.svg").read_bytes() == first
    assert again["html"].read_bytes() == rendered["html"].read_bytes()


@pytest.mark.slow(seconds=30)
def test_snakemake_report_on_a_tiny_sweep(tmp_path):
    """The workflow's aggregate and report rules on a tiny sweep whose records are synthetic
    (no training), then ``snakemake --report``."""
    config = {
        "models": ["minilm-l2"],
        "methods": ["bitfit", "lora"],
        "tasks": ["docstring-match"],
        "seeds": [0],
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    for method in config["methods"]:
        record = make_record("minilm-l2", method, "docstring-match", 0)
        write_record(tmp_path / "results" / "runs" / record["run_id"] / "result.json", record)
    # The leaderboard as target: nothing else (no training, no other reports) is needed.
    snakemake = ["reports/leaderboard.html", "--configfile", str(tmp_path / "config.yaml")]
    run_snakemake(tmp_path, *snakemake, "--cores", "1", "--allowed-rules", "aggregate", "report")
    for stem in PLOTS:
        assert (tmp_path / "reports" / "plots" / f"{stem}.svg").is_file()
    assert ">lora<" in (tmp_path / "reports" / "leaderboard.html").read_text()
    run_snakemake(tmp_path, *snakemake, "--report", "report.html")
    report = (tmp_path / "report.html").read_text()
    for name in ("leaderboard.html", "pareto-trainable.svg", "scaling.svg", "overall.csv"):
        assert name in report


def test_a_lower_is_better_metric_selects_and_normalises_the_other_way(monkeypatch):
    from peftbench.plugin import metrics

    monkeypatch.setitem(metrics.METRICS, "error_rate", metrics.Metric("error_rate", False, 0, 1))
    records = []
    for setting, dev, score in (("a", 0.30, 0.25), ("b", 0.20, 0.40)):
        record = make_record("minilm-l2", "lora", "docstring-match", 0, "ok", 0.0, "", setting)
        record["metrics"].update(
            primary="error_rate",
            values={"error_rate": score},
            chance={"error_rate": 0.5},
            dev={"num_examples": 10, "values": {"error_rate": dev}},
        )
        records.append(record)
    tidy = runs(table_of(records))
    grid = grid_summary(tidy).set_index("setting")
    assert list(grid.index[grid["selected"]]) == ["b"]  # the lower dev error wins
    # (score - chance) / (best - chance): an error of 0.25 against chance 0.5 is halfway to 0.
    assert tidy.set_index("setting").loc["a", "normalised"] == pytest.approx(0.5)


def test_an_undeclared_metric_is_refused_naming_the_declared_ones():
    from peftbench.plugin.metrics import metric, register_metric

    with pytest.raises(ValueError, match="'bleu' has no declared direction; declared: accuracy"):
        metric("bleu")
    with pytest.raises(ValueError, match="contradict its direction"):
        register_metric("loss", higher_is_better=True, best=0.0, worst=10.0)


@pytest.mark.slow
def test_cells_with_predictions_show_intervals_and_whether_they_differ_from_the_best(
    rendered_with_predictions,
):
    tables = rendered_with_predictions["tables"]
    tasks = pd.read_csv(tables / "tasks.csv", keep_default_na=False, na_values=[""])
    finished = tasks[tasks["seeds_ok"] > 0]
    assert (finished["interval"] == "bootstrap").all()
    assert (finished["score_low"] <= finished["score_mean"]).all()
    assert (finished["score_mean"] <= finished["score_high"]).all()
    assert finished.groupby("task")["leader"].sum().tolist() == [1, 1]
    tested = finished[~finished["leader"]]
    assert tested["vs_best_p_holm"].notna().all() and tested["distinguishable"].any()
    assert (tested["vs_best_p_holm"] >= tested["vs_best_p"]).all()
    # Both seeds: the paired bootstrap across seeds; one seed of accuracy: McNemar.
    tests = tested.set_index(["task", "method", "model"])["vs_best_test"]
    assert tests[("docstring-match", "bitfit", "minilm-l4")] == "McNemar exact"
    assert tests[("docstring-match", "lora", "minilm-l2")] == "paired bootstrap"
    markdown = rendered_with_predictions["markdown"].read_text()
    section = markdown.split("## docstring-match")[1].split("\n## ")[0]
    leader = next(line for line in section.splitlines() if line.startswith("| 1 |"))
    assert " \\[0." in leader and "| best |" in leader
    assert "| yes (p=" in section and "| 1/2 |" in section
    board = pd.read_csv(tables / "overall.csv")
    both = board.dropna(subset=["score_low"])  # every task bootstrapped, every seed finished
    assert len(both) == 9 and (both["score_low"] < both["score_mean"]).all()
    pairs = pd.read_csv(tables / "pairs.csv", dtype={"seed": str})
    # 11 cells with predictions on docstring-match, 12 on cola: pairs of methods per model.
    assert set(pairs["seed"]) == {"0", "1", "all"}
    assert (pairs["p_holm"] >= pairs["p_value"]).all()
    assert "## Ranking across tasks" in markdown and "Friedman test over 4 methods" in markdown


def test_a_single_accuracy_without_predictions_gets_a_wilson_interval(tmp_path):
    records = [
        make_record("minilm-l2", "lora", "docstring-match", 0, score=0.75),  # 24 of 32
        make_record("minilm-l2", "lora", "glue/cola", 0, score=0.3),
    ]
    write_table(table_of(records), tmp_path / "t.csv")
    write_reports(tmp_path / "t.csv", tmp_path / "l.md", tmp_path / "l.html", tables_dir=tmp_path)
    tasks = pd.read_csv(tmp_path / "tasks.csv", keep_default_na=False, na_values=[""])
    accuracy, mcc = tasks.iloc[0], tasks.iloc[1]
    assert accuracy["interval"] == "wilson"
    # 24/32 at z = 1.96: centre (0.75 + z²/64) / (1 + z²/32) = 0.7232, half-width
    # z · sqrt(0.75 · 0.25 / 32 + z²/4096) / (1 + z²/32) = 0.1443.
    assert (accuracy["score_low"], accuracy["score_high"]) == (
        pytest.approx(0.5789, abs=1e-4),
        pytest.approx(0.8675, abs=1e-4),
    )
    assert mcc["interval"] == "none" and math.isnan(mcc["score_low"])
    assert "| 0.750 \\[0.579, 0.867\\] | 1 |" in (tmp_path / "l.md").read_text()


def test_a_predictions_file_that_does_not_give_the_score_is_skipped(tmp_path):
    record = make_record("minilm-l2", "lora", "docstring-match", 0)
    path = write_run(tmp_path, record)
    write_predictions(path.parent, record["run_id"], [0] * 100, list(np.arange(100) % 2))
    tidy = runs(collect([path]))
    with pytest.warns(UserWarning, match="predictions do not give its score"):
        assert cell_predictions(tidy) == {}
    other = make_record("minilm-l2", "full", "docstring-match", 0)
    found = cell_predictions(runs(collect([write_run(tmp_path, other)])))
    assert list(found) == [("docstring-match", "full", "minilm-l2")]


def test_efficiency_is_reported_beside_the_raw_axes(rendered):
    board = pd.read_csv(rendered["tables"] / "overall.csv")
    expected = board["score_mean"] / np.log10(board["trainable"])
    assert board["efficiency"].tolist() == pytest.approx(expected.tolist(), nan_ok=True)
    svg = (rendered["markdown"].parent / "plots" / "cd-diagram.svg").read_text()
    assert "Friedman p" in svg and "bitfit" in svg


def test_compare_prints_the_paired_result_of_two_methods(tmp_path):
    for method in ("full", "lora"):
        for seed in (0, 1):
            write_run(tmp_path, make_record("minilm-l2", method, "docstring-match", seed))
    write_run(tmp_path, make_record("minilm-l2", "bitfit", "docstring-match", 0))
    text = compare_methods(tmp_path, "full", "lora")
    assert text.startswith("docstring-match · minilm-l2: full (A) vs lora (B) (accuracy, 100")
    lines = text.splitlines()
    assert "McNemar exact" in lines[3] and "paired bootstrap" in lines[-1]
    assert lines[-1].split()[0] == "all"
    assert "+0.1000" in lines[3]  # full scores 0.1 above lora in make_record
    assert "no paired test" in compare_methods(tmp_path, "full", "freeze")
    assert compare_methods(tmp_path, "full", "lora", model="minilm-l6").startswith("no runs")


GENERATION = {"docstring-name": ("exact_match", 0.125), "alpaca": ("rouge_l", 0.2)}
"""Generation tasks of the synthetic records: primary metric, baseline."""


def generation_record(
    method: str,
    task: str,
    seed: int,
    score: float,
    forgetting: float,
    serving: tuple[float, float | None],
    examples: int = 40,
) -> dict:
    """A schema-1.2 record of a tiny-llama generation run: ``serving`` is the unmerged and the
    merged seconds per token (None: the method does not merge)."""
    from peftbench.run.generation import serving_record

    record = make_record("minilm-l2", method, "docstring-match", seed)
    metric, baseline = GENERATION[task]
    record["schema_version"] = "1.2"
    record["run_id"] = f"tiny-llama/{method}/{task}/default/seed{seed}"
    record["spec"].update(model="tiny-llama", task=task)
    record["metrics"].update(
        primary=metric,
        num_examples=examples,
        values={metric: score},
        chance={metric: baseline},
        dev={"num_examples": 16, "values": {metric: score}},
    )
    record["forgetting"] = {
        "base_ce": 2.5,
        "tuned_ce": 2.5 + forgetting,
        "forgetting": forgetting,
        "tokens": 8128,
        "unit": "nats/token",
    }
    unmerged, merged = (
        None if s is None else {"s_per_token": s, "tokens_per_s": 1 / s} for s in serving
    )
    record["serving"] = serving_record(unmerged, merged, 4, 32)
    validate_record(record)
    return record


def write_generation_run(folder: Path, record: dict) -> Path:
    """``record`` with the predictions file of a generation run scored by exact match: 1/0
    correctness against references all 1, its share right the record's score."""
    run_dir = folder / "runs" / record["run_id"]
    examples = record["metrics"]["num_examples"]
    right = round(record["metrics"]["values"]["exact_match"] * examples)
    correct = [1] * right + [0] * (examples - right)
    write_predictions(run_dir, record["run_id"], correct, [1] * examples)
    write_record(run_dir / "result.json", record)
    return run_dir / "result.json"


def markdown_section(markdown: str, title: str) -> list[dict[str, str]]:
    """The rows of the first table under ``## title``, as header -> cell text."""
    section = markdown.split(f"\n## {title}\n")[1].split("\n## ")[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    split = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    return [dict(zip(split[0], row, strict=True)) for row in split[1:]]


@pytest.fixture(scope="module")
def generation_reports(tmp_path_factory) -> dict[str, Path]:
    """Generation runs (exact match with predictions files, ROUGE-L without) beside one
    classification run, rendered."""
    folder = tmp_path_factory.mktemp("generation")
    paths = [
        write_generation_run(folder, generation_record(*args))
        for args in (
            ("lora", "docstring-name", 0, 0.75, 0.010, (0.0041234, 0.0035)),
            ("lora", "docstring-name", 1, 0.8, 0.030, (0.0041234, 0.0035)),
            ("prompt_tuning", "docstring-name", 0, 0.25, -0.004, (0.005, None)),
        )
    ]
    for seed, score in ((0, 0.4), (1, 0.5)):
        record = generation_record("lora", "alpaca", seed, score, 0.02, (0.004, 0.0035))
        paths.append(folder / "runs" / record["run_id"] / "result.json")
        write_record(paths[-1], record)
    paths.append(write_run(folder, make_record("minilm-l2", "lora", "docstring-match", 0)))
    write_table(collect(paths), folder / "t.csv")
    reports = {"markdown": folder / "l.md", "html": folder / "l.html", "tables": folder / "tables"}
    write_reports(
        folder / "t.csv", reports["markdown"], reports["html"], tables_dir=folder / "tables"
    )
    return reports


LM_HEADERS = [
    "forgetting (Δ CE, nats/token)",
    "latency unmerged (ms/token)",
    "latency merged (ms/token)",
    "serving tokens/s (unmerged)",
    "serving tokens/s (merged)",
]


def test_generation_rows_show_forgetting_and_serving_latency(generation_reports):
    markdown = generation_reports["markdown"].read_text()
    rows = {(r["method"], r["model"]): r for r in markdown_section(markdown, "docstring-name")}
    lora, prompt = rows[("lora", "tiny-llama")], rows[("prompt\\_tuning", "tiny-llama")]
    assert [lora[h] for h in LM_HEADERS] == ["+0.020", "4.12", "3.5", "243", "286"]
    assert [prompt[h] for h in LM_HEADERS] == ["-0.004", "5", "—", "200", "—"]  # no merge
    overall_rows = {(r["method"], r["model"]): r for r in markdown_section(markdown, "Overall")}
    # Means over the runs that measured them: 2 of docstring-name, 2 of alpaca (4.0 ms).
    assert overall_rows[("lora", "tiny-llama")][LM_HEADERS[0]] == "+0.020"
    assert overall_rows[("lora", "tiny-llama")][LM_HEADERS[1]] == "4.06"
    assert [overall_rows[("lora", "minilm-l2")][h] for h in LM_HEADERS] == ["—"] * 5
    tasks = pd.read_csv(generation_reports["tables"] / "tasks.csv").set_index(["task", "method"])
    cell = tasks.loc[("docstring-name", "lora")]
    assert (cell["base_ce"], cell["tuned_ce"], cell["forgetting"]) == pytest.approx(
        (2.5, 2.52, 0.02)
    )
    assert cell["serve_unmerged_ms_per_token"] == pytest.approx(4.1234)
    assert cell["serve_merged_tokens_per_s"] == pytest.approx(1 / 0.0035)
    assert math.isnan(tasks.loc[("docstring-name", "prompt_tuning"), "serve_merged_ms_per_token"])
    html = generation_reports["html"].read_text()
    assert 'data-type="number" title="Causal-LM and generation runs: tuned minus base' in html
    assert '<td class="num" data-sort="0.02">+0.020</td>' in html
    assert "**forgetting**: Causal-LM and generation runs" in markdown


def test_exact_match_is_tested_against_its_baseline_and_rouge_l_is_not(generation_reports):
    from scipy.stats import binomtest

    markdown = generation_reports["markdown"].read_text()
    section = markdown.split("\n## docstring-name\n")[1]
    assert section.startswith(
        "\nPrimary metric: exact\\_match; baseline (most frequent training answer): 0.125.\n"
    )
    rows = {r["method"]: r for r in markdown_section(markdown, "docstring-name")}
    p = binomtest(10, 40, 0.125, alternative="greater").pvalue  # 10 of 40 right
    assert rows["prompt\\_tuning"]["above chance"] == f"no (p={p:.2g})"
    assert rows["lora"]["above chance"].startswith("yes (p=")
    assert rows["prompt\\_tuning"]["vs best"].startswith("yes (p=")  # McNemar on seed 0
    tasks = pd.read_csv(
        generation_reports["tables"] / "tasks.csv", keep_default_na=False, na_values=[""]
    )
    tasks = tasks.set_index(["task", "method", "model"])
    lora = tasks.loc[("docstring-name", "lora", "tiny-llama")]
    assert lora["interval"] == "bootstrap" and lora["score_low"] < 0.775 < lora["score_high"]
    rouge = tasks.loc[("alpaca", "lora", "tiny-llama")]
    assert rouge["interval"] == "none" and math.isnan(rouge["chance_p"])
    alpaca = markdown.split("\n## alpaca\n")[1].split("\n## ")[0]
    assert "baseline (most frequent training answer): 0.200" in alpaca
    assert "rouge\\_l is a mean of per-example scores, not a share of examples right" in alpaca
    assert markdown_section(markdown, "alpaca")[0]["rouge\\_l"] == "0.450 ± 0.071"
    assert markdown_section(markdown, "alpaca")[0]["above chance"] == "—"


def test_a_single_exact_match_without_predictions_gets_a_wilson_interval():
    record = generation_record("lora", "docstring-name", 0, 0.25, 0.0, (0.004, None))
    summary, _ = with_intervals(task_summary(runs(table_of([record]))), {})
    assert summary.loc[0, "interval"] == "wilson"
    bounds = wilson_interval(0.25, 40)
    assert (summary.loc[0, "score_low"], summary.loc[0, "score_high"]) == pytest.approx(bounds)


def test_classification_leaderboards_show_no_language_model_columns(rendered):
    markdown = rendered["markdown"].read_text()
    header = next(
        line
        for line in markdown.split("## docstring-match")[1].splitlines()
        if line.startswith("| #")
    )
    assert header == (
        "| # | method | model | accuracy | seeds | normalised | above chance | vs best | "
        "trainable % | stored | stored % | peak memory (CPU peak RSS) | train tokens/s |"
    )
    html = rendered["html"].read_text()
    for text in ("nats/token", "ms/token", "serving tokens/s", "**forgetting**", "baseline"):
        assert text not in markdown and text not in html
