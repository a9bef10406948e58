"""Hashes of the code a run depends on, for Snakemake's ``params:`` rerun trigger.

Snakemake's own ``code`` trigger only sees the text of ``shell:``/``run:`` blocks, not edits in
the installed harness or plugins. A run depends on the harness (every module of the
``peftbench`` package outside the plugin packages) and on the modules of its model, method and
task plugins, plus the plugin-package modules they import. Editing one method's module changes
the hash of that method's runs only.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import subprocess
import sys
from functools import cache
from pathlib import Path

from peftbench.plugin.registry import METHODS, MODELS, TASKS

HARNESS_DIR = Path(__file__).parents[1]
"""The ``peftbench`` package folder (``harness/peftbench``)."""
REPORTING_LAYERS = ("reporting", "cli")
"""The subpackages that only aggregate, render and drive (import-linter's contracts keep the run
layers from importing them): editing them reruns no training. Everything else is run code."""


def _source_files(reporting: bool) -> tuple[Path, ...]:
    """The core's files (not the linked plugin folders: each run hashes its own plugins)."""
    files = []
    for path in sorted(HARNESS_DIR.rglob("*")):
        parts = path.relative_to(HARNESS_DIR).parts
        if (HARNESS_DIR / parts[0]).is_symlink():
            continue
        if path.is_file() and "__pycache__" not in parts and path.suffix != ".pyc":
            if (parts[0] in REPORTING_LAYERS) == reporting:
                files.append(path)
    return tuple(files)


def plugin_files(plugin: object) -> set[Path]:
    """The plugin's module file plus the sibling modules of its package that it imports."""
    module = sys.modules[type(plugin).__module__]
    if not getattr(module, "__file__", None):
        return set()
    path = Path(module.__file__)
    # A harness class (e.g. a hub model) is covered by the harness hash. The plugin folders are
    # linked into the package (harness/peftbench/methods -> ../../methods): compare real paths.
    if HARNESS_DIR.resolve() in path.resolve().parents:
        return set()
    files = {path}
    package = module.__name__.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            name = node.module or ""
            if node.level:
                name = package + ("." + name if name else "")
            if name.startswith(package + "."):  # found without importing it (lazy imports)
                found = importlib.util.find_spec(name)
                if found is not None and found.origin:
                    files.add(Path(found.origin))
    return files


def hash_files(files: list[Path] | tuple[Path, ...], root: Path | None = None) -> str:
    """One digest of the files' names (relative to ``root`` when given) and contents."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root) if root else path.name).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@cache
def harness_hash() -> str:
    """Hash of the harness code a run depends on: every file outside the reporting layers."""
    return hash_files(_source_files(reporting=False), HARNESS_DIR)


@cache
def reporting_hash() -> str:
    """Hash of the reporting layers (``reporting/``, ``cli/``)."""
    return hash_files(_source_files(reporting=True), HARNESS_DIR)


@cache
def code_hash(model: str, method: str, task: str) -> str:
    """One hash of everything the run ``model × method × task`` executes in peftbench's code."""
    files: set[Path] = set()
    for plugin in (MODELS.get(model), METHODS.get(method), TASKS.get(task)):
        files |= plugin_files(plugin)
    return f"{harness_hash()}-{hash_files(sorted(files))}"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=HARNESS_DIR, capture_output=True, text=True, check=True
    ).stdout.strip()


@cache
def git_commit() -> str | None:
    """The commit of the harness's source checkout (``+dirty`` with local edits), if any."""
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain")
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")
