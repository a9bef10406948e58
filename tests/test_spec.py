from __future__ import annotations

import json

import pytest

from peftbench.planning.spec import (
    RunSpec,
    SpecError,
    parse_assignments,
    read_spec,
    resolve_hparams,
    resolve_spec,
    write_spec,
)


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
        ("r", "four", "expected an int"),
        ("steps", 0, "must be a positive integer"),
        ("precision", "fp8", "valid: auto, fp32, bf16, fp16, int8, nf4"),
        ("lr", -1.0, "must be positive"),
        ("head_lr", -1e-3, "must be >= 0"),
        ("forgetting_texts", 0, r"forgetting_texts=0; valid: 1 to 64 \(the first N texts"),
        ("forgetting_texts", 65, "forgetting_texts=65; valid: 1 to 64"),
    ],
)
def test_bad_values_are_refused(key, value, fragment):
    with pytest.raises(SpecError, match=fragment):
        resolve_hparams("lora", {key: value})


def test_spec_checks_names_and_seed():
    spec = resolve_spec("minilm-l2", "bitfit", "docstring-match", 3)
    assert spec.run_id == "minilm-l2/bitfit/docstring-match/default/seed3"
    with pytest.raises(SpecError, match="seed"):
        resolve_spec("minilm-l2", "bitfit", "docstring-match", -1)


def test_parse_assignments():
    assert parse_assignments(["lr=1e-3", " r = 4"]) == {"lr": "1e-3", "r": "4"}
    with pytest.raises(SpecError, match="key=value"):
        parse_assignments(["lr"])


def test_grid_points_cross_the_axes_in_name_order():
    from peftbench.planning.grid import grid_points, setting_label

    points = grid_points({"r": [4, 8], "lr": [1e-3, 5e-3]})
    assert points == [
        {"lr": 1e-3, "r": 4},
        {"lr": 1e-3, "r": 8},
        {"lr": 5e-3, "r": 4},
        {"lr": 5e-3, "r": 8},
    ]
    assert [setting_label(p) for p in points[:2]] == ["lr=0.001,r=4", "lr=0.001,r=8"]
    assert grid_points(None) == [{}] and setting_label({}) == "default"


def test_setting_labels_are_folder_safe_and_unique():
    from peftbench.planning.grid import LABEL, setting_label

    a = setting_label({"target_modules": "query value"})
    b = setting_label({"target_modules": "query/value"})
    assert LABEL.fullmatch(a) and LABEL.fullmatch(b) and a != b
    assert a.startswith("target_modules=query-value-")


def test_a_bad_setting_label_is_refused_with_the_allowed_characters():
    with pytest.raises(SpecError, match=r"setting 'a/b': use only letters"):
        resolve_spec("minilm-l2", "lora", "docstring-match", 0, setting="a/b")


def test_a_grid_sweep_plans_one_run_per_setting_with_its_values():
    from peftbench.planning.sweep import plan_sweep

    config = {
        "models": ["minilm-l2"],
        "methods": ["lora", "bitfit"],
        "tasks": ["docstring-match"],
        "seeds": [0, 1],
        "budget": {"steps": 3, "batch_size": 8, "max_length": 32},
        "method_hparams": {"lora": {"lr": 1e-4, "r": 4}},
        "grid": {"lora": {"lr": [1e-3, 5e-3]}},
    }
    sweep = plan_sweep(config)
    ids = sorted(spec.run_id for spec in sweep.specs)
    assert len(ids) == 6
    assert "minilm-l2/lora/docstring-match/lr=0.005/seed1" in ids
    assert "minilm-l2/bitfit/docstring-match/default/seed0" in ids
    lora = [s for s in sweep.specs if s.setting == "lr=0.005"]
    assert {s.hparams["lr"] for s in lora} == {5e-3} and {s.hparams["r"] for s in lora} == {4}
    planned = json.loads(
        sweep.spec_json(
            model="minilm-l2", method="lora", task="docstring-match", setting="lr=0.005", seed=1
        )
    )
    assert planned["hparams"]["lr"] == 5e-3 and planned["setting"] == "lr=0.005"
    assert (
        RunSpec.from_dict(planned)
        == sweep.by_run_id["minilm-l2/lora/docstring-match/lr=0.005/seed1"]
    )


def test_a_spec_file_round_trips_and_is_checked_again_when_read(tmp_path):
    spec = resolve_spec("minilm-l2", "lora", "docstring-match", 3, {"r": "4"}, None, "r=4")
    path = write_spec(tmp_path / "run", spec)
    assert read_spec(path) == spec
    assert json.loads(path.read_text())["hparams"]["r"] == 4  # stored resolved, typed
    fields = spec.to_dict()
    fields["hparams"] = {**fields["hparams"], "rank": 4}
    path.write_text(json.dumps(fields))
    with pytest.raises(SpecError, match=r"run spec .*spec.json: unknown hyperparameter 'rank'"):
        read_spec(path)
    path.write_text(json.dumps({**spec.to_dict(), "sed": 1}))
    with pytest.raises(SpecError, match=r"unknown fields \['sed'\]"):
        read_spec(path)
    path.write_text("{not json")
    with pytest.raises(SpecError, match="cannot be read"):
        read_spec(path)


def test_the_run_id_is_the_run_pattern():
    spec = resolve_spec("minilm-l2", "lora", "docstring-match", 3, setting="r=4")
    assert spec.run_id == "minilm-l2/lora/docstring-match/r=4/seed3"
