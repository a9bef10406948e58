"""The command line: fast listings, documented hyperparameters and options, progress logs,
and library notices kept off the console."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from peftbench.cli import (
    TRAINING_HPARAM_HELP,
    build_parser,
    main,
)
from peftbench.planning.spec import TRAINING_DEFAULTS
from peftbench.plugin.registry import METHODS
from peftbench.run.measure import format_duration
from tests.conftest import run_cli

HEAVY = ("torch", "transformers", "peft", "datasets", "accelerate", "bitsandbytes")


def python(code: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_listings_import_no_heavy_library():
    out = python(
        "import sys\n"
        "from peftbench.cli import main\n"
        "for kind in ('methods', 'models', 'tasks', 'hparams'): main(['list', kind])\n"
        "main(['list', 'hparams', 'qlora'])\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    ).stdout
    assert out.splitlines()[-1] == "[]"


def table_rows(text: str) -> dict[str, list[str]]:
    """``name type default valid meaning...`` lines of ``list hparams``, by name."""
    return {line.split()[0]: line.split() for line in text.splitlines() if line[:1].isalnum()}


def test_list_hparams_shows_training_and_the_methods_own(capsys):
    assert main(["list", "hparams", "lora"]) == 0
    rows = table_rows(capsys.readouterr().out)
    lora = METHODS.get("lora")
    for name, default in {**TRAINING_DEFAULTS, **lora.defaults}.items():
        assert rows[name][1] == type(default).__name__, name
        assert rows[name][2] == (repr(default) if isinstance(default, str) else str(default))
    assert rows["r"][3] == "1..inf" and rows["dropout"][3] == "0..1"  # the declared bounds
    assert " ".join(rows["r"][4:]) == lora.hyperparameters["r"].help
    assert " ".join(rows["steps"][4:]) == TRAINING_HPARAM_HELP["steps"]


def test_list_hparams_of_a_peft_tuner_shows_its_config_fields(capsys):
    """peft's OFT tuner: its OFTConfig fields with peft's defaults and meanings; what is not a
    hyperparameter of a run (bookkeeping, the head, what peft reads from the model) is not."""
    from peft import OFTConfig

    assert main(["list", "hparams", "peft:oft"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows["oft_block_size"][1:3] == ["int", str(OFTConfig().oft_block_size)]
    assert rows["bias"][3] == "none|all|oft_only"  # its Literal annotation
    assert " ".join(rows["coft"][4:]).startswith("Whether to use the constrained variant of OFT")
    assert rows["lr"][2] == "0.0001"
    assert not {"peft_type", "task_type", "modules_to_save", "inference_mode"} & set(rows)


def test_list_hparams_without_method_points_to_the_methods(capsys):
    assert main(["list", "hparams"]) == 0
    out = capsys.readouterr().out
    assert set(TRAINING_DEFAULTS) <= set(table_rows(out))
    assert "r" not in table_rows(out)
    assert "peftbench list hparams METHOD" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["list", "hparams", "lorax"], "unknown method 'lorax'; did you mean 'lora'"),
        (["list", "methods", "lora"], "only 'list hparams METHOD'"),
    ],
)
def test_list_errors_name_the_bad_value_and_the_choices(capsys, argv, expected):
    assert main(argv) == 2
    assert expected in capsys.readouterr().err


def test_every_hyperparameter_has_a_meaning():
    assert set(TRAINING_HPARAM_HELP) == set(TRAINING_DEFAULTS)
    for name, method in METHODS:
        if not name.startswith("peft:"):  # peft's tuners: peft's meanings (XLoRA's has none)
            assert all(h.help for h in method.hyperparameters.values()), name
        assert "lr" in method.hyperparameters, name


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_option_of_every_subcommand_has_help():
    commands = subcommands()
    assert {"list", "run", "tokenize", "count"} <= set(commands)
    for command, parser in commands.items():
        for action in parser._actions:
            assert action.help, f"peftbench {command} {action.dest} has no help"


def test_run_help_ends_with_the_training_hyperparameters():
    text = subcommands()["run"].format_help()
    epilog = text[text.index("peftbench list hparams METHOD") :]
    assert set(TRAINING_DEFAULTS) <= set(table_rows(epilog))


def test_non_actionable_library_notices_are_dropped_and_others_kept():
    code = (
        "import logging, warnings\n"
        "from peftbench.cli.console import configure_output\n"
        "configure_output(library_warnings={})\n"
        "ops = logging.getLogger('bitsandbytes.backends.cpu.ops')\n"
        "ops.warning('Failed to load CPU gemm_4bit_forward from kernels-community: x')\n"
        "ops.warning('The installed version of bitsandbytes was compiled without GPU support.')\n"
        "logging.getLogger('bitsandbytes.cextension').warning('No prebuilt binary for CUDA 12.9')\n"
        "logging.getLogger('transformers.modeling_utils').warning('LOAD REPORT')\n"
        "warnings.warn_explicit('old is deprecated', FutureWarning, 'm.py', 1,"
        " module='transformers.modeling_utils')\n"
        "warnings.warn_explicit('ours changes', FutureWarning, 'm.py', 1, module='userlib')\n"
        "logging.getLogger('peftbench.run.runner').info('step 1/1')\n"
    )
    quiet = python(code.format(False)).stderr
    assert "kernels-community" not in quiet and "without GPU support" not in quiet
    assert "LOAD REPORT" not in quiet and "old is deprecated" not in quiet
    assert "No prebuilt binary" in quiet and "ours changes" in quiet and "step 1/1" in quiet
    loud = python(code.format(True)).stderr
    assert "kernels-community" in loud and "LOAD REPORT" in loud and "old is deprecated" in loud


@pytest.mark.slow
def test_run_logs_phases_and_progress(tmp_path):
    result = run_cli(
        "run", "--model", "minilm-l2", "--method", "lora", "--task", "docstring-match",
        "--set", "steps=4", "--set", "batch_size=8", "--set", "max_length=32",
        "--set", "max_eval_examples=16", "--out", str(tmp_path),
    )  # fmt: skip
    log = result.stderr
    for name in ("load", "train", "eval", "dev"):
        assert f"phase {name} started" in log and f"phase {name} done in " in log
    steps = [line for line in log.splitlines() if "peftbench.run.training: step " in line]
    assert [line.split("step ")[1].split()[0] for line in steps] == ["1/4", "2/4", "3/4", "4/4"]
    assert all(
        " loss " in line and " samples/s " in line and " elapsed " in line and " eta " in line
        for line in steps
    )
    assert log.index("phase train started") < log.index("step 1/4") < log.index("phase train done")


@pytest.mark.parametrize(("seconds", "text"), [(41.6, "42s"), (545, "9m05s"), (7380, "2h03m")])
def test_durations_read_in_seconds_minutes_or_hours(seconds, text):
    assert format_duration(seconds) == text
