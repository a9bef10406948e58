"""The Snakemake workflow, for real, on a tiny sweep in a temporary folder."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from peftbench.planning.spec import read_spec
from peftbench.records.predictions import read_predictions
from peftbench.records.record import read_record
from tests.conftest import REPO, SHARED_METHODS, run_cli, run_snakemake, write_config
from tests.test_faults import FAILING


@pytest.mark.slow
def test_tiny_sweep_end_to_end(shared_sweep, with_plugins):
    """Full fine-tuning and a two-point LoRA grid (in the shared sweep, conftest.py): every
    setting runs, each record carries its setting and dev score, and the leaderboard keeps the
    setting with the best dev score."""
    folder = shared_sweep.folder
    runs = folder / "results" / "runs"
    records = sorted(
        path
        for method in ("full", "lora")
        for path in runs.glob(f"minilm-l2/{method}/*/*/*/result.json")
    )
    assert [r.relative_to(runs).as_posix() for r in records] == [
        "minilm-l2/full/docstring-match/default/seed0/result.json",
        "minilm-l2/lora/docstring-match/lr=0.001/seed0/result.json",
        "minilm-l2/lora/docstring-match/lr=0.005/seed0/result.json",
    ]
    dev = {}
    for path in records:
        record = read_record(path)
        assert record["status"]["code"] == "ok", record["status"]
        assert record["spec"]["hparams"]["steps"] == 3
        assert record["metrics"]["dev"]["num_examples"] == 16  # max_eval_examples
        dev[record["spec"]["setting"]] = record["metrics"]["dev"]["values"]["accuracy"]
    assert {read_record(p)["spec"]["hparams"]["lr"] for p in records[1:]} == {1e-3, 5e-3}
    table = pd.read_csv(folder / "results" / "leaderboard.csv")
    everything = sorted(runs.rglob("result.json"))
    assert len(table) == len(everything) == 10  # one row per run, whatever its status
    assert set(table["spec.method"]) == {*SHARED_METHODS, *FAILING}
    grid = pd.read_csv(folder / "reports" / "tables" / "grid.csv")
    lora = grid[grid["method"] == "lora"].set_index("setting")
    best = "lr=0.001" if dev["lr=0.001"] >= dev["lr=0.005"] else "lr=0.005"
    assert lora["selected"].to_dict() == {s: s == best for s in ("lr=0.001", "lr=0.005")}
    markdown = (folder / "reports" / "leaderboard.md").read_text()
    html = (folder / "reports" / "leaderboard.html").read_text()
    for method in ("full", "lora"):
        assert f"| {method}" in markdown or f" {method} " in markdown
        assert f">{method}<" in html
    # Tokenization ran once for every run (they share the tokenizer).
    assert len(list((folder / "results" / "cache" / "tokenized").glob("*/*/len16"))) == 1
    # Each run folder holds its contract and its validation predictions beside the record.
    for path in records:
        record = read_record(path)
        assert read_spec(path.parent / "spec.json").to_dict() == record["spec"]
        kept = read_predictions(path.parent / "predictions.json")
        assert kept.run_id == record["run_id"] and len(kept.predictions) == 16
        accuracy = float((kept.predictions == kept.references).mean())
        assert accuracy == pytest.approx(record["metrics"]["values"]["accuracy"])
    compared = run_cli("compare", str(folder / "results"), "full", "lora").stdout
    assert "docstring-match · minilm-l2: full (A) vs lora (B)" in compared
    assert "McNemar" in compared
    # Nothing to do on a second invocation.
    again = run_snakemake(folder, "--cores", "2", "--configfile", str(shared_sweep.config), "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
def test_dry_run_shows_the_crossed_dag(tmp_path):
    config = write_config(tmp_path, models=["minilm-l2", "minilm-l4"], seeds=[0, 1])
    result = run_snakemake(tmp_path, "-n", "--configfile", str(config))
    counts = dict(
        line.split()[:2]
        for line in result.stdout.splitlines()
        if line.split()[:1] in (["run"], ["tokenize"])
    )
    assert counts == {"run": "8", "tokenize": "1"}


@pytest.mark.slow
def test_lint_finds_nothing(tmp_path):
    """`snakemake --lint` exits 1 with findings; its findings are plain text on stderr even
    with `--lint json` (Snakemake 9.27), hence both checks."""
    result = run_snakemake(tmp_path, "--lint", check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Lints for" not in output, output[-3000:]
    assert "your workflow is in a good condition" in output


def test_job_environment_is_the_project_environment_less_its_editable_install():
    """envs/peftbench.yaml (the rules' conda env) keeps environment.yml's packages; only the
    `pip: -e .` is left to envs/peftbench.post-deploy.sh."""
    project = yaml.safe_load((REPO / "environment.yml").read_text())
    jobs = yaml.safe_load((REPO / "envs" / "peftbench.yaml").read_text())
    pip = [entry for entry in project["dependencies"] if isinstance(entry, dict)][0]["pip"]
    pip.remove("-e .")
    assert jobs == project
    assert (REPO / "envs" / "peftbench.post-deploy.sh").is_file()


@pytest.mark.slow
def test_sweep_ends_with_a_line_of_statuses(shared_sweep):
    """Runs that cannot apply (``never``), fail or diverge are recorded; the sweep still
    succeeds, and says so (the shared sweep, conftest.py; its records: tests/test_faults.py)."""
    line = "10 runs: 6 ok, 1 oom, 1 unsupported, 1 diverged, 1 failed — see reports/leaderboard.md"
    assert line in shared_sweep.output.splitlines()


@pytest.mark.slow(seconds=30)
def test_sweep_in_which_no_run_finished_fails(tmp_path):
    config = write_config(tmp_path, methods=["lora"], hparams={"precision": "fp16"})
    result = run_snakemake(tmp_path, "--cores", "2", "--configfile", str(config), check=False)
    assert result.returncode != 0
    assert "1 run: 1 unsupported — see reports/leaderboard.md" in result.stdout
    assert "no run finished: 1 recorded, none with status ok" in result.stderr
    assert (tmp_path / "reports" / "leaderboard.md").is_file()  # the reports are still written
