"""Shared fixtures. Nothing here reaches a network: models come from PyPI, data from the
standard library or ../shared (tests using the latter skip cleanly without it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_GLUE = REPO.parent / "shared" / "data" / "glue"
IN_CI = os.environ.get("CI", "").lower() == "true"
"""CI provides everything the tests need (GLUE data in ../shared, Chromium, the whole stack):
there, a skipped test is a failure, so a missing requirement can never pass as green."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must provide what this test needs: {reason}"


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if IN_CI and report.skipped:
        report.outcome = "failed"


@pytest.fixture
def glue_dir() -> Path:
    if not (SHARED_GLUE / "sst2" / "train.tsv").is_file():
        pytest.skip(f"GLUE data not found at {SHARED_GLUE}")
    return SHARED_GLUE


def run_cli(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m peftbench ...`` in a subprocess, as a user would."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "peftbench", *args], cwd=cwd, capture_output=True, text=True, env=env
    )
    if check and result.returncode != 0:
        raise AssertionError(f"peftbench {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result


def run_snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(workdir),
            *args,
        ],
        capture_output=True,
        text=True,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


TINY_BUDGET = {"steps": 3, "batch_size": 8, "max_length": 32}


def write_config(folder: Path, **changes) -> Path:
    """A tiny sweep's config file in ``folder``: minilm-l2 × full, lora × docstring-match ×
    seed 0 at a few steps, with ``changes`` applied on top."""
    config = {
        "models": ["minilm-l2"],
        "methods": ["full", "lora"],
        "tasks": ["docstring-match"],
        "seeds": [0],
        "budget": TINY_BUDGET,
        "hparams": {"max_eval_examples": 32},
        "count_models": [],
        **changes,
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
