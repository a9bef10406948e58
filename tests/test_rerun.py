"""Sweeps that survive: stale results rerun and fresh ones do not, a killed run leaves nothing
half-written and reruns, and a sweep reproduces its records exactly.

The shared sweep (conftest.py) has run to completion; a second one of two of its runs, in
another folder, is killed twice mid-training, resumed, and must end with the same records.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from peftbench.cli import build_parser
from peftbench.records.record import read_record
from tests.conftest import REPO, SHARED_SWEEP, run_cli, run_snakemake, write_config
from tests.test_faults import PLUGIN_PACKAGE, on_pythonpath

METHODS = ["lora-copy", "slow"]
"""Two of the shared sweep's methods: a copy of peftbench's LoRA module, free to edit, and a
head-only method that sleeps ``$PBTEST_STEP_SLEEP`` seconds per step (tests/test_faults.py)."""
RUN = "results/runs/minilm-l2/{method}/docstring-match/default/seed0/result.json"
VARYING = ("timing", "throughput", "memory")
"""Record fields that measure the machine, not the result."""


def config_file(folder: Path) -> Path:
    """The shared sweep's config (conftest.py) for :data:`METHODS` alone."""
    settings = {key: SHARED_SWEEP[key] for key in ("budget", "hparams", "method_hparams")}
    return write_config(folder, methods=METHODS, **settings)


def planned_hparams(method: str) -> dict:
    """The budget and hyperparameters the shared sweep sets for ``method``."""
    return {
        **SHARED_SWEEP["budget"],
        **SHARED_SWEEP["hparams"],
        **SHARED_SWEEP["method_hparams"].get(method, {}),
    }


def job_counts(output: str) -> dict[str, int]:
    """Jobs per rule from Snakemake's job stats table."""
    table = output.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\S+)\s+(\d+)$", table, re.M)}


def planned_runs(output: str) -> list[str]:
    """Outputs of the ``run`` jobs a dry run lists."""
    return re.findall(r"^rule run:\n(?:\s+input: .*\n)?\s+output: (\S+)", output, re.M)


def summary_rows(summary: str) -> list[dict[str, str]]:
    """The rows of ``snakemake --summary`` (output_file, rule, status, plan, ...)."""
    rows = [line.split("\t") for line in summary.splitlines() if "\t" in line]
    return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


@pytest.mark.slow
def test_runs_share_one_tokenization(shared_sweep, with_plugins):
    folder = shared_sweep.folder
    counts = job_counts(shared_sweep.output)
    assert (counts["tokenize"], counts["run"]) == (1, 10)  # with --cores 2, one tokenization
    assert len(list((folder / "results/cache/tokenized").glob("*/*/*"))) == 1
    fingerprints = {
        read_record(folder / RUN.format(method=m))["provenance"]["data_fingerprint"]
        for m in METHODS
    }
    assert len(fingerprints) == 1
    assert run_cli("verify", str(folder / "results")).returncode == 0


@pytest.mark.slow
def test_records_carry_the_command_that_made_them(shared_sweep):
    """The job's command names the run's spec file, and that file holds the record's spec."""
    folder = shared_sweep.folder
    for method in METHODS:
        path = folder / RUN.format(method=method)
        record = read_record(path)
        program, *args = shlex.split(record["provenance"]["command"])
        parsed, spec = build_parser().parse_args(args), record["spec"]
        assert (program, parsed.command_name) == ("peftbench", "run")
        assert folder / parsed.spec == path.parent / "spec.json"
        assert parsed.model is parsed.method is parsed.set is None  # all in the file
        assert json.loads((folder / parsed.spec).read_text()) == spec
        planned = planned_hparams(method)
        assert {key: spec["hparams"][key] for key in planned} == planned


@pytest.mark.slow(seconds=30)
def test_editing_a_method_reruns_its_runs_only(shared_sweep, with_plugins, tmp_path):
    folder, config = shared_sweep.folder, shared_sweep.config
    edited = tmp_path / "plugins"  # a copy: other workers read the shared plugin folder
    shutil.copytree(with_plugins, edited)
    module = edited / PLUGIN_PACKAGE / "lora_copy.py"
    module.write_text(module.read_text() + "\n# an edit\n")
    with pytest.MonkeyPatch.context() as patch:
        on_pythonpath(patch, edited)  # first on PYTHONPATH: the edited copy is imported
        summary = run_snakemake(folder, "--summary", "--configfile", str(config)).stdout
    # (--list-changes params lists every output in Snakemake 9; --summary tells them apart.)
    rows = summary_rows(summary)
    lora = RUN.format(method="lora-copy")
    stale = {row["output_file"]: row["status"] for row in rows if row["status"] != "ok"}
    assert stale == {lora: "params changed"}
    pending = {row["output_file"] for row in rows if row["plan"] != "no update"}
    assert pending & {row["output_file"] for row in rows if row["rule"] in ("run", "tokenize")} == {
        lora
    }
    assert "results/leaderboard.csv" in pending  # the aggregation follows
    # The hash follows content, not modification times: unedited, nothing is stale.
    dry = run_snakemake(folder, "-n", "--configfile", str(config))
    assert "Nothing to be done" in dry.stdout


def start_sweep(folder: Path, config: Path, marker: Path) -> subprocess.Popen:
    """Snakemake in its own process group, with the ``slow`` run sleeping between steps."""
    marker.unlink(missing_ok=True)
    env = {**os.environ, "PBTEST_MARKER": str(marker), "PBTEST_STEP_SLEEP": "0.5"}
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    return subprocess.Popen(
        [*command, "--directory", str(folder), "--cores", "2", "--configfile", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, "snakemake ended before training started"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.1)


def slow_run_process(sweep: subprocess.Popen) -> psutil.Process:
    """The ``peftbench run`` process of the ``slow`` method under ``sweep``."""
    for child in psutil.Process(sweep.pid).children(recursive=True):
        line = child.cmdline()
        spec = line[line.index("--spec") + 1] if "--spec" in line else ""
        if "peftbench" in line and "/slow/" in spec and child.name().startswith("python"):
            return child
    raise AssertionError("no running 'slow' run")


def comparable(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in VARYING}


@pytest.mark.slow(seconds=150)
def test_killed_runs_leave_nothing_and_rerun_to_the_same_records(
    shared_sweep, with_plugins, tmp_path
):
    reference = shared_sweep.folder
    config, marker = config_file(tmp_path), tmp_path / "training"
    slow = tmp_path / RUN.format(method="slow")

    # SIGTERM to the run while it trains: the job fails, no record, Snakemake stops.
    sweep = start_sweep(tmp_path, config, marker)
    wait_for(marker, sweep)
    slow_run_process(sweep).send_signal(signal.SIGTERM)
    assert sweep.wait(timeout=300) != 0
    assert not slow.exists()

    # SIGKILL to Snakemake and its jobs (a crash): no record, a stale lock, an incomplete mark.
    sweep = start_sweep(tmp_path, config, marker)
    wait_for(marker, sweep)
    os.killpg(sweep.pid, signal.SIGKILL)
    sweep.wait(timeout=60)
    assert not slow.exists()
    assert not list(slow.parent.glob(".result.json.*"))  # no temporary half-file either

    # Had a job outlived Snakemake and finished its record, that record is marked incomplete:
    # the workflow profile's rerun-incomplete reruns it instead of stopping.
    shutil.copy(reference / RUN.format(method="slow"), slow)
    dry = ("-n", "--configfile", str(config))
    strict = run_snakemake(tmp_path, *dry, "--workflow-profile", "none", check=False)
    assert strict.returncode != 0 and "--rerun-incomplete" in strict.stdout + strict.stderr
    planned = run_snakemake(tmp_path, *dry)
    assert "cannot be locked" in planned.stdout + planned.stderr
    assert RUN.format(method="slow") in planned_runs(planned.stdout)

    run_snakemake(tmp_path, "--unlock", "--configfile", str(config))
    run_snakemake(tmp_path, "--cores", "2", "--configfile", str(config))
    for method in METHODS:
        rerun = read_record(tmp_path / RUN.format(method=method))
        original = read_record(reference / RUN.format(method=method))
        assert rerun["status"]["code"] == "ok"
        assert comparable(rerun) == comparable(original)
