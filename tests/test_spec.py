from __future__ import annotations

import pytest

from peftbench.spec import SpecError, parse_assignments, resolve_hparams, resolve_spec


def test_overrides_are_parsed_to_the_default_types():
    hp = resolve_hparams("lora", {"r": "4", "lr": "1e-3", "steps": 7, "target_modules": "query"})
    assert hp["r"] == 4 and hp["lr"] == 1e-3 and hp["steps"] == 7
    assert hp["alpha"] == 16 and hp["batch_size"] == 16  # defaults kept


def test_unknown_hyperparameter_names_the_valid_ones():
    with pytest.raises(SpecError, match=r"unknown hyperparameter 'rank'.*valid: .*\br\b"):
        resolve_hparams("lora", {"rank": 4})


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("r", "four", "expected a int"),
        ("steps", 0, "must be a positive integer"),
        ("precision", "fp8", "valid: fp32, bf16, fp16, int8, nf4"),
        ("lr", -1.0, "must be positive"),
    ],
)
def test_bad_values_are_refused(key, value, fragment):
    with pytest.raises(SpecError, match=fragment):
        resolve_hparams("lora", {key: value})


def test_spec_checks_names_and_seed():
    spec = resolve_spec("minilm-l2", "bitfit", "docstring-match", 3)
    assert spec.run_id == "minilm-l2/bitfit/docstring-match/seed3"
    with pytest.raises(SpecError, match="seed"):
        resolve_spec("minilm-l2", "bitfit", "docstring-match", -1)


def test_parse_assignments():
    assert parse_assignments(["lr=1e-3", " r = 4"]) == {"lr": "1e-3", "r": "4"}
    with pytest.raises(SpecError, match="key=value"):
        parse_assignments(["lr"])
