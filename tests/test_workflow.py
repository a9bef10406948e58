"""The Snakemake workflow, for real, on a tiny sweep in a temporary folder."""

from __future__ import annotations

import pandas as pd
import pytest

from peftbench.record import read_record
from tests.conftest import run_snakemake, write_config


@pytest.mark.slow
def test_tiny_sweep_end_to_end(tmp_path):
    """Full fine-tuning and a two-point LoRA grid: every setting runs, each record carries its
    setting and dev score, and the leaderboard keeps the setting with the best dev score."""
    config = write_config(tmp_path, grid={"lora": {"lr": [1e-3, 5e-3]}})
    run_snakemake(tmp_path, "--cores", "2", "--configfile", str(config))
    records = sorted((tmp_path / "results" / "runs").rglob("result.json"))
    assert [r.relative_to(tmp_path / "results" / "runs").as_posix() for r in records] == [
        "minilm-l2/full/docstring-match/default/seed0/result.json",
        "minilm-l2/lora/docstring-match/lr=0.001/seed0/result.json",
        "minilm-l2/lora/docstring-match/lr=0.005/seed0/result.json",
    ]
    dev = {}
    for path in records:
        record = read_record(path)
        assert record["status"]["code"] == "ok", record["status"]
        assert record["spec"]["hparams"]["steps"] == 3
        assert record["metrics"]["dev"]["num_examples"] == 32  # max_eval_examples
        dev[record["spec"]["setting"]] = record["metrics"]["dev"]["values"]["accuracy"]
    assert {read_record(p)["spec"]["hparams"]["lr"] for p in records[1:]} == {1e-3, 5e-3}
    table = pd.read_csv(tmp_path / "results" / "leaderboard.csv")
    assert len(table) == 3 and set(table["spec.method"]) == {"full", "lora"}
    grid = pd.read_csv(tmp_path / "reports" / "tables" / "grid.csv")
    lora = grid[grid["method"] == "lora"].set_index("setting")
    best = "lr=0.001" if dev["lr=0.001"] >= dev["lr=0.005"] else "lr=0.005"
    assert lora["selected"].to_dict() == {s: s == best for s in ("lr=0.001", "lr=0.005")}
    markdown = (tmp_path / "reports" / "leaderboard.md").read_text()
    html = (tmp_path / "reports" / "leaderboard.html").read_text()
    for method in ("full", "lora"):
        assert f"| {method}" in markdown or f" {method} " in markdown
        assert f">{method}<" in html
    # Tokenization ran once for both runs (they share the tokenizer).
    assert len(list((tmp_path / "results" / "cache" / "tokenized").glob("*/*/len32"))) == 1
    # Nothing to do on a second invocation.
    again = run_snakemake(tmp_path, "--cores", "2", "--configfile", str(config), "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_dry_run_shows_the_crossed_dag(tmp_path):
    config = write_config(tmp_path, models=["minilm-l2", "minilm-l4"], seeds=[0, 1])
    result = run_snakemake(tmp_path, "-n", "--configfile", str(config))
    counts = dict(
        line.split()[:2]
        for line in result.stdout.splitlines()
        if line.split()[:1] in (["run"], ["tokenize"])
    )
    assert counts == {"run": "8", "tokenize": "1"}
