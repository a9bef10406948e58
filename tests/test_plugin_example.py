"""A third-party plugin, for real: examples/peftbench-layernorm, found through the entry point
its ``pyproject.toml`` declares, is listed and sweeps.

The example is installed the way tests/test_faults.py installs its plugins: its package and a
dist-info folder carrying those entry points, in a folder on ``PYTHONPATH`` (the subprocesses
see it; this environment and this process do not). It runs in the shared sweep (conftest.py).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from peftbench.records.record import read_record
from tests.conftest import REPO, run_cli

if sys.version_info >= (3, 11):
    import tomllib
else:
    tomllib = pytest.importorskip("tomli")

EXAMPLE = REPO / "examples" / "peftbench-layernorm"


def install_example(root: Path) -> Path:
    """The example's package in ``root`` and a dist-info declaring the entry points its
    ``pyproject.toml`` declares (what ``pip install`` writes)."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    for package in (EXAMPLE / "src").iterdir():
        if (package / "__init__.py").is_file():
            shutil.copytree(package, root / package.name)
    name = project["name"].replace("-", "_")
    info = root / f"{name}-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = []
    for group, entries in project["entry-points"].items():
        lines += [f"[{group}]", *(f"{key} = {value}" for key, value in entries.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.slow
def test_installed_plugin_is_listed_and_sweeps(shared_sweep, with_plugins):
    assert "layernorm" in run_cli("list", "methods").stdout.split()
    record = read_record(
        shared_sweep.folder
        / "results/runs/minilm-l2/layernorm/docstring-match/default/seed0/result.json"
    )
    assert record["status"]["code"] == "ok", record["status"]
    # Trainable: 2 x 384 per LayerNorm (embeddings + 2 per layer x 2 layers = 5) + the head.
    assert record["params"]["trainable_method"] == 5 * 2 * 384
    assert "layernorm" in (shared_sweep.folder / "reports" / "leaderboard.md").read_text()
    assert "peftbench_layernorm" not in sys.modules  # this process and its environment: untouched
