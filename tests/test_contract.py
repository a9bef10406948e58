"""What the run contract promises and nothing else checks: the dev split, the code hash's scope,
and counts of a quantized run that do not depend on how the quantization was asked for."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from peftbench.planning import codehash
from peftbench.planning.splits import DEV_MAX_EXAMPLES, dev_examples, train_examples
from peftbench.planning.sweep import plan_sweep
from peftbench.plugin.registry import METHODS, MODELS, TASKS
from peftbench.run.data import carve_dev

# The dev split ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def numbered():
    """docstring-match with each training row's position in a ``row`` column."""
    data = TASKS.get("docstring-match").load()
    data["train"] = data["train"].map(lambda _, i: {"row": i}, with_indices=True)
    return data


def test_dev_split_is_the_documented_fraction_disjoint_and_fixed(numbered):
    carved = carve_dev(numbered)
    size = len(numbered["train"])
    train, dev = list(carved["train"]["row"]), list(carved["dev"]["row"])
    assert len(dev) == dev_examples(size) == math.ceil(0.15 * size)  # under the cap
    # Stratified: each class keeps its share of the training rows, to within one row.
    for label in set(numbered["train"]["label"]):
        share = list(numbered["train"]["label"]).count(label) / size
        assert abs(list(carved["dev"]["label"]).count(label) - share * len(dev)) <= 1
    assert not set(train) & set(dev)
    assert sorted(train + dev) == list(range(size))  # a partition of the training rows
    assert list(carved["validation"]["text"]) == list(numbered["validation"]["text"])  # untouched
    # No seed or setting enters the split: carving again gives the same rows, in order.
    assert list(carve_dev(numbered)["dev"]["row"]) == dev


def test_the_dev_split_is_capped():
    assert dev_examples(60_614) == DEV_MAX_EXAMPLES == 1000  # SST-2: not its 15%, 9,093
    assert train_examples(60_614) == 59_614
    assert dev_examples(2_127) == 320  # RTE: 15%


def test_every_seed_and_setting_of_a_sweep_reads_one_tokenization():
    """Runs differ by seed and setting but share the tokenized folder (and so the dev split):
    its path is a function of the tokenizer, task and max_length only."""
    from peftbench.planning.spec import RunSpec

    sweep = plan_sweep(
        {
            "models": ["minilm-l2", "minilm-l6"],
            "methods": ["lora"],
            "tasks": ["docstring-match"],
            "seeds": [0, 1],
            "budget": {"steps": 3, "batch_size": 8, "max_length": 32},
            "grid": {"lora": {"r": [4, 8]}},
        }
    )
    assert len(sweep.specs) == 2 * 2 * 2
    keys = {
        (MODELS.get(s.model).tokenizer_key, s.task, s.hparams["max_length"]) for s in sweep.specs
    }
    assert len(keys) == 1  # minilm-l2 and minilm-l6 share MiniLM's tokenizer
    assert all(isinstance(s, RunSpec) for s in sweep.specs)


# The code hash's scope --------------------------------------------------------------------


@pytest.fixture
def harness_copy(tmp_path, monkeypatch) -> Path:
    """A copy of the harness package that the hash functions read instead of the real one."""
    copy = tmp_path / "harness"
    shutil.copytree(codehash.HARNESS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(codehash, "HARNESS_DIR", copy)
    return copy


def hashes() -> tuple[str, str]:
    return codehash.harness_hash.__wrapped__(), codehash.reporting_hash.__wrapped__()


def edit(path: Path) -> None:
    path.write_text(path.read_text() + "\n# edited\n")


def layer_files(reporting: bool) -> list[str]:
    """Every file of the run layers, or of the reporting layers, as a path in the package."""
    root = codehash.HARNESS_DIR
    return [
        str(path.relative_to(root))
        for path in sorted(root.rglob("*"))
        if path.is_file()
        and "__pycache__" not in path.parts
        and not (root / path.relative_to(root).parts[0]).is_symlink()  # the linked plugin folders
        and (path.relative_to(root).parts[0] in ("reporting", "cli")) == reporting
    ]


def test_every_harness_file_is_in_exactly_one_hash():
    run_files, reporting_files = layer_files(False), layer_files(True)
    assert "run/runner.py" in run_files and "planning/spec.py" in run_files
    assert "reporting/stats.py" in reporting_files and "reporting/summary.py" in reporting_files
    assert "cli/__init__.py" in reporting_files
    assert not set(run_files) & set(reporting_files)


@pytest.mark.parametrize("module", layer_files(reporting=False))
def test_editing_run_code_changes_every_run_hash_and_not_the_reporting_one(harness_copy, module):
    runs, reporting = hashes()
    edit(harness_copy / module)
    edited_runs, edited_reporting = hashes()
    assert edited_runs != runs  # the harness part of every run's code hash
    assert edited_reporting == reporting


@pytest.mark.parametrize("module", layer_files(reporting=True))
def test_editing_reporting_code_changes_only_the_reporting_hash(harness_copy, module):
    runs, reporting = hashes()
    edit(harness_copy / module)
    edited_runs, edited_reporting = hashes()
    assert edited_runs == runs  # no training reruns
    assert edited_reporting != reporting  # the aggregation and reports do


def test_a_plugin_hash_covers_its_module_and_the_siblings_it_imports_only():
    lora = {p.name for p in codehash.plugin_files(METHODS.get("lora"))}
    assert {"lora.py", "_peft.py"} <= lora
    assert "bitfit.py" not in lora
    # Siblings imported inside functions (not yet in sys.modules) count too.
    assert "_layers.py" in {p.name for p in codehash.plugin_files(METHODS.get("houlsby"))}
    assert {p.name for p in codehash.plugin_files(TASKS.get("glue/rte"))} == {"glue.py"}
    assert "minilm.py" in {p.name for p in codehash.plugin_files(MODELS.get("minilm-l2"))}


def test_run_hashes_differ_by_plugin_and_share_the_harness_part():
    base = codehash.code_hash("minilm-l2", "lora", "docstring-match")
    other_method = codehash.code_hash("minilm-l2", "bitfit", "docstring-match")
    other_task = codehash.code_hash("minilm-l2", "lora", "glue/rte")
    assert len({base, other_method, other_task}) == 3
    assert {h.split("-")[0] for h in (base, other_method, other_task)} == {codehash.harness_hash()}


def test_the_tokenization_hash_ignores_the_method():
    sweep = plan_sweep(
        {
            "models": ["minilm-l2"],
            "methods": ["lora", "bitfit"],
            "tasks": ["docstring-match", "docstring-module"],
            "seeds": [0],
            "budget": {"steps": 3, "batch_size": 8, "max_length": 32},
        }
    )
    key = MODELS.get("minilm-l2").tokenizer_key
    match, module = (sweep.tokenize_hash(t, key) for t in ("docstring-match", "docstring-module"))
    assert match == module  # one task module serves both: the same code
    assert match.split("-")[0] == codehash.harness_hash()
    assert match != sweep.tokenize_hash("glue/rte", key)
