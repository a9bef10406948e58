"""Shared fixtures. Nothing here reaches a network: models come from PyPI, data from the
standard library or ../shared (tests using the latter skip cleanly without it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import xdist.plugin
import yaml

if TYPE_CHECKING:
    from peftbench.planning.spec import RunSpec

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


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: one worker more than xdist's own count of CPUs. The workflow tests spend
    about a fifth of their time waiting on Snakemake's subprocesses (nested Snakemake starts,
    job polling); the extra worker keeps the CPUs busy meanwhile. Where
    ``PYTEST_XDIST_AUTO_NUM_WORKERS`` is set, it decides, as in xdist."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    return xdist.plugin.pytest_xdist_auto_num_workers(config) + 1


def pytest_configure(config: pytest.Config) -> None:
    """An xdist worker computes on one thread: the workers already outnumber the CPUs, and
    torch's default of one thread per CPU in each worker oversubscribes them (its OpenMP threads
    then spin, waiting for each other)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``slurm`` tests need a cluster: they run only where ``-m`` names them (``-m slurm``),
    whatever else selects tests (the fast tier's ``-m "not slow"`` included). The modules run
    longest first (:func:`expected_seconds`), so that pytest-xdist, which hands modules out in
    this order, does not end on one worker with a long module while the others idle."""
    if "slurm" not in (config.option.markexpr or ""):
        cluster = [item for item in items if item.get_closest_marker("slurm")]
        if cluster:
            config.hook.pytest_deselected(items=cluster)
            items[:] = [item for item in items if not item.get_closest_marker("slurm")]
    seconds: dict[str, float] = defaultdict(float)
    for item in items:
        seconds[item.path] += expected_seconds(item)
    items.sort(key=lambda item: -seconds[item.path])  # stable: a module's own order is kept


def expected_seconds(item: pytest.Item) -> float:
    """About how long ``item`` takes on 2 busy cores: a ``slow`` test says so where it takes
    much longer than 5 s (``@pytest.mark.slow(seconds=150)``), counting the session fixtures it
    usually builds; any other test, a fraction of a second."""
    slow = item.get_closest_marker("slow")
    return slow.kwargs.get("seconds", 5) if slow else 0.2


@pytest.fixture
def glue_dir() -> Path:
    if not (SHARED_GLUE / "sst2" / "train.tsv").is_file():
        pytest.skip(f"GLUE data not found at {SHARED_GLUE}")
    return SHARED_GLUE


@pytest.fixture(scope="session")
def tokenized(tmp_path_factory) -> Callable[[RunSpec], str]:
    """``tokenized(spec)``: a folder holding ``spec``'s task tokenized for its model (what the
    workflow's ``tokenize`` rule writes), made once per task × tokenizer × length × data folder
    in the session; pass it to ``execute`` as ``tokenized_dir``."""
    from peftbench.plugin.registry import MODELS
    from peftbench.run.data import save_tokenized

    root = tmp_path_factory.mktemp("tokenized")
    made: dict[tuple, str] = {}

    def folder(spec: RunSpec) -> str:
        length = spec.hparams["max_length"]
        key = (spec.task, MODELS.get(spec.model).tokenizer_key, length, spec.data_dir)
        if key not in made:
            out = root / str(len(made))
            save_tokenized(out, spec.task, spec.model, length, spec.data_dir)
            made[key] = str(out)
        return made[key]

    return folder


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


# The shared sweep ------------------------------------------------------------------------

SHARED_METHODS = ["full", "lora", "layernorm", "lora-copy", "slow"]
"""The shared sweep's methods that finish; tests/test_faults.py's ``FAILING`` fail in it."""
SHARED_SWEEP = {
    "budget": {"steps": 3, "batch_size": 4, "max_length": 16},
    "hparams": {"max_eval_examples": 16},
    "method_hparams": {"slow": {"steps": 20}},  # long enough to be killed (tests/test_rerun.py)
    "grid": {"lora": {"lr": [1e-3, 5e-3]}},
}
"""What the shared sweep's config sets beside its methods (see :func:`shared_sweep`)."""


@dataclass(frozen=True)
class FinishedSweep:
    folder: Path
    config: Path
    output: str
    """Snakemake's stdout and stderr."""


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]):
    """The folder ``name`` that ``build`` fills once per test session: the first pytest-xdist
    worker to ask builds it while the others wait on a lock, then all read it (the workers'
    temporary folders share a parent that is this session's own)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():  # a build that failed left no mark: start it afresh
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def test_plugins(tmp_path_factory) -> Path:
    """A folder that installs, once on ``PYTHONPATH``, the test-only plugins of
    tests/test_faults.py, ``lora-copy`` (a copy of peftbench's LoRA module; edit a copy of the
    folder, as tests/test_rerun.py does: every worker reads this one) and
    examples/peftbench-layernorm as its ``pyproject.toml`` declares it. This process never
    imports them; subprocesses (Snakemake, its jobs, the CLI) do."""
    from tests.test_faults import FAULTY_METHODS, PLUGIN_PACKAGE, TINY_TASK, write_plugin
    from tests.test_plugin_example import install_example

    def build(root: Path) -> None:
        lora = (REPO / "methods" / "lora.py").read_text().replace('"lora"', '"lora-copy"')
        entry_points = {
            "peftbench.methods": {
                "faulty": f"{PLUGIN_PACKAGE}.faulty",
                "lora-copy": f"{PLUGIN_PACKAGE}.lora_copy",
            },
            "peftbench.tasks": {"tiny-match": f"{PLUGIN_PACKAGE}.tiny_task"},
        }
        modules = {"faulty": FAULTY_METHODS, "tiny_task": TINY_TASK, "lora_copy": lora}
        install_example(write_plugin(root, modules, entry_points))

    return built_once(tmp_path_factory, "plugins", build)


@pytest.fixture
def with_plugins(test_plugins: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """:func:`test_plugins` on ``PYTHONPATH`` for this test's subprocesses."""
    from tests.test_faults import on_pythonpath

    on_pythonpath(monkeypatch, test_plugins)
    return test_plugins


@pytest.fixture(scope="session")
def shared_sweep(test_plugins: Path, tmp_path_factory) -> FinishedSweep:
    """One finished tiny sweep that the workflow, fault, rerun and plugin tests read (copy it
    to change it): minilm-l2 on docstring-match, seed 0, :data:`SHARED_METHODS` (LoRA over a
    two-point learning-rate grid) and tests/test_faults.py's failing methods, at 3 steps of 4."""
    from tests.test_faults import FAILING, on_pythonpath

    def build(folder: Path) -> None:
        config = write_config(folder, methods=[*SHARED_METHODS, *FAILING], **SHARED_SWEEP)
        with pytest.MonkeyPatch.context() as patch:
            on_pythonpath(patch, test_plugins)
            result = run_snakemake(folder, "--cores", "2", "--configfile", str(config))
        (folder / SHARED_SWEEP_OUTPUT).write_text(result.stdout + result.stderr)

    folder = built_once(tmp_path_factory, "shared-sweep", build)
    output = (folder / SHARED_SWEEP_OUTPUT).read_text()
    return FinishedSweep(folder, folder / "config.yaml", output)


SHARED_SWEEP_OUTPUT = "snakemake-output.txt"
"""Where the shared sweep keeps Snakemake's stdout and stderr for every worker."""
