"""Hyperparameters: one declaration each (HParam), every value parsed and checked at plan time,
even a value no run reads (a method the sweep does not run, a value another one shadows)."""

from __future__ import annotations

import copy
import math

import pytest
import yaml

from peftbench.planning.sweep import SweepError, plan_sweep
from peftbench.plugin.errors import SpecError
from peftbench.plugin.method import HParam, Method, learning_rate
from tests.conftest import REPO, run_snakemake, write_config


def test_values_are_parsed_to_the_declared_type():
    assert HParam(8, "rank").parse("r", "4") == 4
    assert HParam(0.1, "dropout").parse("dropout", 1) == 1.0
    assert HParam(False, "flag").parse("flag", "yes") is True
    assert HParam("auto", "targets").parse("target_modules", 3) == "3"
    assert HParam(None, "rank", type=int, nullable=True).parse("r", "null") is None
    assert HParam(None, "rank", type=int, nullable=True).parse("r", "5") == 5
    layers = HParam(None, "layers", type=object, nullable=True)
    assert layers.parse("layers_to_transform", "[0, 1]") == [0, 1]  # JSON text
    assert layers.parse("layers_pattern", "layers") == "layers"  # text that is not JSON
    assert layers.parse("layers_to_transform", [0, 1]) == [0, 1]


@pytest.mark.parametrize(
    ("declared", "raw", "fragments"),
    [
        (HParam(8, "rank"), "four", ["r='four'", "expected an int", "like the default 8"]),
        (HParam(8, "rank"), True, ["r=True", "expected an int"]),
        (HParam(8, "rank"), None, ["r=None", "expected an int"]),
        (HParam(False, "flag"), "maybe", ["r='maybe'", "true/false"]),
        (HParam(None, "x", type=object), {"a": object()}, ["r={'a':", "JSON value"]),
    ],
)
def test_a_value_of_another_type_is_refused_naming_it(declared, raw, fragments):
    with pytest.raises(SpecError) as error:
        declared.parse("r", raw)
    for fragment in fragments:
        assert fragment in str(error.value)


def test_bounds_and_choices_name_the_value_and_what_is_valid():
    rank = HParam(8, "rank", bounds=(1, math.inf))
    assert rank.problems("r", 8) == []
    assert rank.problems("r", 0) == ["r=0: must be between 1 and inf"]
    assert rank.problems("r", math.nan) == ["r=nan: must be between 1 and inf"]
    activation = HParam("relu", "nonlinearity", choices=("relu", "gelu"))
    assert activation.problems("activation", "tanh") == ["activation='tanh'; valid: relu, gelu"]
    assert HParam(None, "r", bounds=(1, 9), nullable=True).problems("r", None) == []


def test_the_four_parallel_dicts_are_refused_with_the_new_way():
    with pytest.raises(TypeError, match="declare each hyperparameter once"):

        class OldStyle(Method):  # noqa: F841 - defining it is the test
            defaults = {"lr": 1e-3}

    class NewStyle(Method):
        hyperparameters = {"lr": learning_rate(1e-3), "k": HParam(2, "layers", (1, 12))}

    assert NewStyle().defaults == {"lr": 1e-3, "k": 2}
    assert NewStyle().check_hparams({"lr": 1e-3, "k": 13}) == ["k=13: must be between 1 and 12"]


def default_config(**changes) -> dict:
    """config/config.yaml (methods full, bitfit, lora with their own lr in method_hparams), on
    one model and task for speed, with ``changes``."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.update(models=["minilm-l2"], tasks=["docstring-match"], count_models=[])
    return {**copy.deepcopy(config), **changes}


def refusal(config: dict) -> str:
    with pytest.raises(SweepError) as error:
        plan_sweep(config)
    return str(error.value)


@pytest.mark.slow
def test_the_default_config_plans():
    """The control for the refusals below: without the bad value, the same config plans."""
    assert len(plan_sweep(default_config()).specs) == 3


def test_a_misspelt_method_in_method_hparams_is_refused_with_a_guess():
    config = default_config()
    config["method_hparams"]["lorra"] = {"r": 16}
    message = refusal(config)
    assert "method_hparams: unknown method 'lorra'; did you mean 'lora'" in message
    assert "valid methods: adalora, bitfit" in message


@pytest.mark.parametrize("value", [-0.1, "abc", math.nan])
def test_a_shared_lr_every_method_shadows_is_still_checked(value):
    """Each default method sets its own lr in method_hparams: hparams.lr reaches no run, and a
    bad one is refused all the same."""
    message = refusal(default_config(hparams={"lr": value}))
    assert f"hparams: lr={value!r}" in message


def test_adaloras_target_rank_above_its_initial_rank_is_refused():
    config = default_config(methods=["adalora"])
    config["method_hparams"] = {"adalora": {"target_r": 100, "init_r": 4}}
    message = refusal(config)
    assert "target_r=100 with init_r=4" in message and "valid: target_r from 1 to 4" in message
    config["method_hparams"]["adalora"]["target_r"] = 4
    assert len(plan_sweep(config).specs) == 1  # equal ranks are valid


def test_method_hparams_of_a_method_the_sweep_does_not_run_are_checked():
    config = default_config()
    config["method_hparams"]["vera"] = {"r": 0}
    assert "method_hparams: vera: r=0: must be between 1 and inf" in refusal(config)


def test_a_method_hparams_value_a_grid_axis_shadows_is_checked():
    config = default_config(grid={"lora": {"r": [4, 8]}})
    config["method_hparams"]["lora"]["r"] = "eight"
    assert "method_hparams: r='eight': expected an int" in refusal(config)


@pytest.mark.slow
def test_a_misspelt_method_is_refused_by_snakemake_before_any_job(tmp_path):
    """End to end: ``snakemake -n`` stops on the typo, naming it and the likely method."""
    config = write_config(tmp_path, method_hparams={"lorra": {"r": 16}})
    result = run_snakemake(tmp_path, "-n", "--configfile", str(config), check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "unknown method 'lorra'; did you mean 'lora'" in output
    assert not (tmp_path / "results").exists()
