"""Failures are data, bad input is refused up front, and nothing untrusted is loaded.

Test-only plugins live in a temporary package on ``PYTHONPATH``, declared to
``importlib.metadata`` by a hand-written dist-info folder: exactly how an installed plugin is
found, without touching the environment.
"""

from __future__ import annotations

import ast
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from peftbench.planning.sweep import SweepError, plan_sweep
from peftbench.records.record import read_record
from tests.conftest import REPO, run_cli, run_snakemake
from tests.conftest import write_config as write_tiny_config
from tests.test_configs import overlay
from tests.tiny_models import tiny_config

PLUGIN_PACKAGE = "pbtest_plugins"
TINY_BUDGET = {"steps": 3, "batch_size": 4, "max_length": 16}

FAULTY_METHODS = '''
"""Test-only methods, each failing the way a real one can, and a slow one to kill."""
import os
import time
from pathlib import Path

import torch

from peftbench import register_method
from peftbench.plugin.method import Method, learning_rate


class Failing(Method):
    hyperparameters = {"lr": learning_rate(1e-4)}
    error: Exception

    def apply(self, model, hp, info):
        raise self.error


@register_method("raises")
class Raises(Failing):
    description = "test: an exception inside the method"
    error = RuntimeError("boom inside the method")


@register_method("cuda-oom")
class CudaOOM(Failing):
    description = "test: CUDA out of memory"
    error = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB")


@register_method("diverges")
class Diverges(Method):
    """Its steps leave every weight NaN: the next loss is not finite."""

    description = "test: training diverges"
    hyperparameters = {"lr": learning_rate(1e-4)}

    def apply(self, model, hp, info):
        return model

    def on_step(self, model, step):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.fill_(float("nan"))


@register_method("never")
class Never(Method):
    description = "test: applies to no model"
    hyperparameters = {"lr": learning_rate(1e-4)}

    def unsupported_reason(self, info):
        return f"never applies to {info.model_type} models"


@register_method("needs-absent")
class NeedsAbsent(Method):
    """A plugin whose dependency is not installed: a broken environment, not a result."""

    description = "test: imports a package that is not installed"
    hyperparameters = {"lr": learning_rate(1e-4)}

    def apply(self, model, hp, info):
        import pbtest_absent_package  # noqa: F401

        return model


@register_method("slow")
class Slow(Method):
    """Trains the head only; marks that training started ($PBTEST_MARKER) and sleeps
    $PBTEST_STEP_SLEEP seconds per step, so a test can kill it mid-training."""

    description = "test: slow head-only training"
    hyperparameters = {"lr": learning_rate(1e-3)}

    def apply(self, model, hp, info):
        return model.requires_grad_(False)

    def on_step(self, model, step):
        if os.environ.get("PBTEST_MARKER"):
            Path(os.environ["PBTEST_MARKER"]).touch()
        time.sleep(float(os.environ.get("PBTEST_STEP_SLEEP", "0")))
'''

TINY_TASK = '''
"""A test-only task that declares its training-set size."""
from peftbench import register_task
from peftbench.tasks.stdlib_docs import DocstringMatch


@register_task("tiny-match")
class TinyMatch(DocstringMatch):
    description = "test: docstring-match declaring 40 training examples"
    def train_size(self, data_dir=None):
        return 40
'''


def write_plugin(
    root: Path, modules: dict[str, str], entry_points: dict[str, dict[str, str]]
) -> Path:
    """A package of ``modules`` under ``root`` with a dist-info declaring ``entry_points``
    (group -> name -> module); put ``root`` on ``PYTHONPATH`` to install it."""
    package = root / PLUGIN_PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name, text in modules.items():
        (package / f"{name}.py").write_text(textwrap.dedent(text).lstrip())
    info = root / f"{PLUGIN_PACKAGE}-0.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {PLUGIN_PACKAGE}\nVersion: 0.0.0\n"
    )
    lines = []
    for group, names in entry_points.items():
        lines += [f"[{group}]", *(f"{name} = {value}" for name, value in names.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root


def on_pythonpath(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Subprocesses (Snakemake, its jobs, the CLI) see the plugin package at ``root``."""
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    )


def write_config(folder: Path, **changes) -> Path:
    return write_tiny_config(
        folder, **{"budget": TINY_BUDGET, "hparams": {"max_eval_examples": 16}, **changes}
    )


@pytest.fixture(scope="module")
def plugin_env(test_plugins) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as patch:
        on_pythonpath(patch, test_plugins)
        yield test_plugins


# Failures are data -----------------------------------------------------------------------

EXPECTED = {
    "diverges": ("diverged", "loss became nan"),
    "raises": ("failed", "RuntimeError: boom inside the method"),
    "cuda-oom": ("oom", "CUDA out of memory"),
    "never": ("unsupported", "never applies to bert models"),
}
FAILING = list(EXPECTED)
"""Methods that fail in the shared sweep (conftest.py), beside the methods that finish."""


@pytest.mark.slow
def test_failures_become_records_and_the_sweep_goes_on(shared_sweep, with_plugins):
    # No --keep-going: no job fails, every outcome is a record; the 6 other runs finish.
    summary = "10 runs: 6 ok, 1 oom, 1 unsupported, 1 diverged, 1 failed — see reports/"
    assert summary in shared_sweep.output
    for method, (code, fragment) in EXPECTED.items():
        record = read_record(
            shared_sweep.folder
            / f"results/runs/minilm-l2/{method}/docstring-match/default/seed0/result.json"
        )
        assert record["status"]["code"] == code, (method, record["status"])
        assert fragment in record["status"]["message"], (method, record["status"])
        assert record["metrics"] == {}
    markdown = (shared_sweep.folder / "reports/leaderboard.md").read_text()
    for shown in ("diverged", "failed", "out of memory", "unsupported"):
        assert shown in markdown
    assert run_cli("verify", str(shared_sweep.folder / "results")).returncode == 0


@pytest.mark.slow(seconds=30)
def test_an_import_error_fails_the_sweep_loudly_and_writes_no_record(plugin_env, tmp_path):
    config = write_config(tmp_path, methods=["needs-absent"], seeds=[0, 1])
    result = run_snakemake(tmp_path, "--cores", "1", "--configfile", str(config), check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    # The failed job's log (shown by the default profile) ends with the one clear line.
    assert "HarnessError: ModuleNotFoundError: No module named 'pbtest_absent_package'" in output
    assert not list(tmp_path.glob("results/runs/**/result.json"))
    assert not (tmp_path / "reports" / "leaderboard.md").exists()


def test_a_quantized_run_without_bitsandbytes_is_unsupported(tmp_path, monkeypatch, tokenized):
    from peftbench.planning.spec import resolve_spec
    from peftbench.run.runner import execute

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes now fails
    spec = resolve_spec(
        "minilm-l2", "lora", "docstring-match", 0, {**TINY_BUDGET, "precision": "int8"}
    )
    record = execute(
        spec, tmp_path / "run", tokenized_dir=tokenized(spec), threads=1, lock_dir=tmp_path / "l"
    )
    assert record["status"]["code"] == "unsupported"
    assert "precision int8 needs the bitsandbytes package" in record["status"]["message"]
    assert "pip install 'bitsandbytes>=0.47,<0.51'" in record["status"]["message"]
    assert record["params"] == {}  # refused before the model was loaded
    assert read_record(tmp_path / "run" / "result.json")["status"]["code"] == "unsupported"


def test_a_full_precision_run_needs_no_bitsandbytes(tmp_path, monkeypatch, tokenized):
    """The quickstart's failure: without bitsandbytes every run, full fine-tuning included,
    was recorded ``failed``. Only the quantized precisions need it."""
    from peftbench.planning.spec import resolve_spec
    from peftbench.run.runner import execute

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    spec = resolve_spec(
        "minilm-l2", "full", "docstring-match", 0, {**TINY_BUDGET, "max_eval_examples": 16}
    )
    record = execute(
        spec, tmp_path / "run", tokenized_dir=tokenized(spec), threads=1, lock_dir=tmp_path / "l"
    )
    assert record["status"]["code"] == "ok", record["status"]


# Bad input is refused before any job starts ---------------------------------------------


BAD_CONFIGS = [
    ({"method_hparams": {"lora": {"r": "four"}}}, ["r='four'", "int"]),
    ({"data_dirs": {"glue/sst3": "data"}}, ["unknown task 'glue/sst3'", "glue/sst2"]),
    ({"budget": {**TINY_BUDGET, "max_length": 4}}, ["4 is less than the minimum of 8"]),
    ({"budget": {**TINY_BUDGET, "batch_size": "8"}}, ["'8' is not of type 'integer'"]),
    ({"models": ["minilm-l3"]}, ["unknown model 'minilm-l3'", "minilm-l2"]),
    ({"seeds": [-1]}, ["-1 is less than the minimum of 0"]),
    ({"methods": ["lora", "lroa"]}, ["unknown method 'lroa'", "bitfit"]),
    ({"hparams": {"rank": 4}}, ["unknown hyperparameter 'rank'", "valid:"]),
    ({"budget": {**TINY_BUDGET, "steps": 0}}, ["0 is less than the minimum of 1"]),
    ({"count_models": ["bert-huge"]}, ["unknown model 'bert-huge'", "llama-3-70b"]),
    ({"grid": {"vera": {"lr": [1e-3]}}}, ["grid: method 'vera' is not in methods", "lora"]),
    ({"grid": {"lora": {"rank": [4, 8]}}}, ["unknown hyperparameter 'rank'", "valid:"]),
    ({"grid": {"lora": {"max_length": [32]}}}, ["max_length cannot vary"]),
    # Found on the meta-device build of each run (harness/peftbench/planning/feasibility.py):
    ({"method_hparams": {"lora": {"r": -4}}}, ["lora", "r", "-4"]),
    (
        {"methods": ["p_tuning"], "method_hparams": {"p_tuning": {"encoder": "gru"}}},
        ["p_tuning", "encoder", "gru", "lstm", "mlp"],
    ),
    (
        {"budget": {**TINY_BUDGET, "max_length": 100000}},
        ["max_length=100000", "512 positions", "valid: 1 to 512"],
    ),
    (
        {"method_hparams": {"lora": {"target_modules": "nonexistent_proj"}}},
        ["target_modules='nonexistent_proj'", "valid: auto, all-linear", "query", "value"],
    ),
    ({"grid": {"lora": {"lr": []}}}, ["should be non-empty"]),
    (
        {"tasks": ["tiny-match"], "budget": {**TINY_BUDGET, "batch_size": 64}},
        ["batch_size=64", "34 training examples", "40 less the dev split", "valid: 1 to 34"],
    ),
]
"""Config changes and what the refusal says. The last one needs the test plugins' task."""
END_TO_END = [BAD_CONFIGS[5], pytest.param(*BAD_CONFIGS[-1], marks=pytest.mark.slow)]
"""Refused by the Snakefile's schema check and by planning (with a plugin's task): the whole
list is checked in this process, as the Snakefile checks a config, these two through
Snakemake."""


def refusal(folder: Path, **change) -> str:
    """What the workflow says of the tiny config with ``change``, checked as the Snakefile does
    (config/config.yaml under the config file, the schema, then ``plan_sweep``), in this
    process."""
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config = overlay(default, yaml.safe_load(write_config(folder, **change).read_text()))
    try:
        validate(config, str(REPO / "config" / "config.schema.yaml"))
        plan_sweep(config)
    except (WorkflowError, SweepError) as error:
        return str(error)
    raise AssertionError(f"accepted: {change}")


@pytest.mark.parametrize("change, fragments", BAD_CONFIGS[:-1])
def test_bad_config_is_refused_by_planning(tmp_path, change, fragments):
    message = refusal(tmp_path, **change)
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("change, fragments", END_TO_END)  # seeds: [-1]; tiny-match's batch
def test_bad_config_is_refused_before_any_job(plugin_env, tmp_path, change, fragments):
    config = write_config(tmp_path, **change)
    result = run_snakemake(tmp_path, "-n", "--configfile", str(config), check=False)
    assert result.returncode != 0
    for fragment in fragments:
        assert fragment in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


# Nothing untrusted is loaded --------------------------------------------------------------


def test_plugin_discovery_imports_declared_entry_points_only(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    root = write_plugin(
        tmp_path / "plugins",
        {
            "declared": FAULTY_METHODS,
            "undeclared": f"open({str(marker)!r}, 'w').close()\n"
            + FAULTY_METHODS.replace('"raises"', '"sneaky"'),
        },
        {"peftbench.methods": {"faulty": f"{PLUGIN_PACKAGE}.declared"}},
    )
    on_pythonpath(monkeypatch, root)
    listed = run_cli("list", "methods").stdout.split()
    assert "raises" in listed and "sneaky" not in listed
    assert not marker.exists()


@pytest.fixture
def hub_calls(monkeypatch) -> list[tuple[str, dict]]:
    """Record the keyword arguments of every transformers loading call (nothing is loaded)."""
    import transformers
    from transformers import BertForSequenceClassification

    calls: list[tuple[str, dict]] = []
    tiny = tiny_config("bert")

    def fake(kind, result):
        def from_pretrained(location, *args, **kwargs):
            calls.append((kind, kwargs))
            return result(kwargs)

        return from_pretrained

    def model(kwargs):
        return BertForSequenceClassification(kwargs["config"]), {"missing_keys": []}

    for cls, kind, result in (
        (transformers.AutoConfig, "config", lambda kwargs: tiny),
        (transformers.AutoTokenizer, "tokenizer", lambda kwargs: object()),
        (transformers.AutoModelForSequenceClassification, "model", model),
    ):
        monkeypatch.setattr(cls, "from_pretrained", fake(kind, result))
    return calls


def test_hub_models_never_trust_remote_code_unless_configured(hub_calls):
    from peftbench.plugin.model import TransformersModel
    from peftbench.plugin.registry import MODELS

    source = MODELS.get("hf:someone/some-model")
    source.config()
    source.tokenizer()
    source.load(num_labels=2)
    assert {kind for kind, _ in hub_calls} == {"config", "tokenizer", "model"}
    assert all(kwargs["trust_remote_code"] is False for _, kwargs in hub_calls)
    assert all(kwargs["use_safetensors"] is True for kind, kwargs in hub_calls if kind == "model")

    hub_calls.clear()
    TransformersModel("someone/custom", trust_remote_code=True).load(num_labels=2)
    assert all(kwargs["trust_remote_code"] is True for _, kwargs in hub_calls)


def test_checkpoints_are_never_unpickled():
    """Every torch.load in peftbench's code passes weights_only=True (no pickle execution)."""
    unsafe = []
    for folder in ("harness", "methods", "models", "tasks"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "load"
                    and ast.unparse(node.func.value) == "torch"
                    and not any(
                        k.arg == "weights_only" and ast.unparse(k.value) == "True"
                        for k in node.keywords
                    )
                ):
                    unsafe.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert unsafe == []
