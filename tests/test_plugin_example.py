"""A third-party plugin, for real: install examples/peftbench-layernorm and sweep with it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from peftbench.records.record import read_record
from tests.conftest import REPO, run_cli, run_snakemake

EXAMPLE = REPO / "examples" / "peftbench-layernorm"


@pytest.fixture(scope="module")
def installed_example():
    pip = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        str(EXAMPLE),
    ]
    subprocess.run(pip, check=True, capture_output=True)
    yield
    subprocess.run(
        [sys.executable, "-m", "pip", "uninstall", "-y", "-q", "peftbench-layernorm"],
        check=True,
        capture_output=True,
    )


@pytest.mark.slow
def test_installed_plugin_is_listed_and_sweeps(installed_example, tmp_path):
    assert "layernorm" in run_cli("list", "methods").stdout
    config = {
        "models": ["minilm-l2"],
        "methods": ["layernorm"],
        "tasks": ["docstring-match"],
        "seeds": [0],
        "budget": {"steps": 3, "batch_size": 8, "max_length": 32},
        "hparams": {"max_eval_examples": 32},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(tmp_path, "--cores", "1", "--configfile", str(tmp_path / "config.yaml"))
    record = read_record(
        tmp_path / "results/runs/minilm-l2/layernorm/docstring-match/default/seed0/result.json"
    )
    assert record["status"]["code"] == "ok", record["status"]
    # Trainable: 2 x 384 per LayerNorm (embeddings + 2 per layer x 2 layers = 5) + the head.
    assert record["params"]["trainable_method"] == 5 * 2 * 384
    assert "layernorm" in (tmp_path / "reports" / "leaderboard.md").read_text()
