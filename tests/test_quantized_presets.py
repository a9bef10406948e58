"""Precision is the one way to quantize: ``qlora`` and ``lora_int8`` are LoRA presets at
``precision=nf4``/``int8``, a run records the precision that ran and counts against the
quantized base, and peft's knowledge lives behind the ``Method`` hooks, not in the harness."""

from __future__ import annotations

import ast

import pytest

from peftbench.planning.counting import count_model_method
from peftbench.planning.spec import resolve_spec
from peftbench.run.runner import execute
from tests.conftest import REPO

TINY = {"steps": 4, "batch_size": 8, "max_length": 32, "max_eval_examples": 32}
STATIC = (
    "base_total", "trainable", "trainable_method", "trainable_head", "added", "added_method",
    "added_head", "stored", "stored_bytes", "inference_added",
)  # fmt: skip
"""Counts that a run takes before training (``stored`` is measured after it, but a frozen
base leaves it as declared)."""


def imported_modules(path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import of the Python file ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_the_harness_imports_no_peft():
    sources = sorted((REPO / "harness").rglob("*.py"))
    assert len(sources) > 10, sources
    peft = [
        f"{path.relative_to(REPO)}:{line}: {module}"
        for path in sources
        for line, module in imported_modules(path)
        if module == "peft" or module.startswith("peft.")
    ]
    assert not peft, "peft belongs behind the Method hooks (methods/_peft.py)"


def test_a_qlora_run_is_a_lora_run_at_nf4(tmp_path, tokenized):
    pytest.importorskip("bitsandbytes")
    spec = resolve_spec("minilm-l2", "qlora", "docstring-match", 0, TINY)
    record = execute(
        spec, tmp_path / "run", tokenized_dir=tokenized(spec), threads=1, lock_dir=tmp_path / "l"
    )
    assert record["status"]["code"] == "ok", record["status"]
    assert record["spec"]["hparams"]["precision"] == "nf4"
    lora_nf4 = count_model_method(
        "minilm-l2",
        "lora",
        {"r": 64, "alpha": 16, "dropout": 0.1, "target_modules": "all-linear", "precision": "nf4"},
    )
    assert {k: record["params"][k] for k in STATIC} == {k: lora_nf4[k] for k in STATIC}
    assert record["params"]["inference_added"] == record["params"]["added_method"] > 0
