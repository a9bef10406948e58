"""peft's MetaMathQA method comparison inside peftbench: ``llama-3.2-3b`` counted without
weights reproduces peft's published ``num_trainable_params`` (docs/parameters.md, "peft's
published counts"), and peft's experiment folders plan as settings of ``peft:<type>`` methods.

The folders and counts are vendored in ``tests/data/peft_method_comparison`` (its README)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from peftbench.cli import main
from peftbench.planning.counting import count_model_method
from peftbench.planning.peft_experiments import ADAMW_WEIGHT_DECAY, read_experiment
from peftbench.planning.spec import SpecError
from peftbench.planning.sweep import SweepError, plan_sweep

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "peft_method_comparison"
EXPERIMENTS = DATA / "experiments"
BAD = ROOT / "tests" / "data" / "peft_experiments_bad" / "llama-3.2-3B-rank8-use-amp"
PUBLISHED = {
    row["experiment_name"]: row for row in csv.DictReader((DATA / "published_counts.csv").open())
}
RECIPE_STEPS = json.loads((DATA / "default_training_params.json").read_text())["max_steps"]
"""AdaLoRA's schedule (tinit, tfinal) needs the recipe's 5,000 steps as its ``total_step``."""
LLAMA_3_2_3B = 3_212_749_824
"""peft's full fine-tuning result: num_trainable_params = num_total_params."""

NOT_COUNTABLE = {
    "adamss/llama-3.2-3B-rank32": (NotImplementedError, "AdaMSS initialises from the weights' SVD"),
    "boft/llama-3.2-3B-default": (RuntimeError, "BOFT's permutation init calls .item()"),
    "frod/llama-3.2-3B-default": (NotImplementedError, "FRoD decomposes the weights at init"),
    "frod/llama-3.2-3B-sparse0.02-lr_0.001": (NotImplementedError, "as frod default"),
    "shira/llama-3.2-3B-lr_0.0003-random_seed_42": (NotImplementedError, "SHiRA's mask: nonzero"),
    "unilora/llama-3.2-3B-default": (NotImplementedError, "UniLoRA's init calls bincount"),
    "ia3/llama-3.2-3B-all-attn-5k-lr0.005": (
        ValueError,
        "peft:ia3 passes full module names as target_modules, so peft finds "
        "feedforward_modules no subset of them",
    ),
    "lora/llama-3.2-3B-rank14-target-mlp-bdlora": (
        SpecError,
        "use_bdlora is a nested config, not a hyperparameter of peft:lora",
    ),
}
"""Folders peftbench cannot count today, with what stops it: most tuners compute from the
weights' values while they initialise, which the meta device does not have."""
LORA_FA = "lora/llama-3.2-3B-rank32-lorafa"


def count(name: str) -> dict:
    experiment = read_experiment(EXPERIMENTS / name, training=False)
    overrides = {**experiment.hparams, "steps": RECIPE_STEPS}
    return count_model_method("llama-3.2-3b", experiment.method, overrides, head="causal-lm")


def test_llama_3_2_3b_has_peft_full_finetuning_size():
    counts = count_model_method("llama-3.2-3b", "full", head="causal-lm")
    assert counts["base_total"] == counts["trainable"] == LLAMA_3_2_3B
    published = PUBLISHED["full-finetuning/llama-3.2-3B-lr_0.00001"]
    assert int(published["num_trainable_params"]) == int(published["num_total_params"])
    assert int(published["num_total_params"]) == LLAMA_3_2_3B


def cases():
    for name in sorted(PUBLISHED):
        marks = []
        if name in NOT_COUNTABLE:
            error, reason = NOT_COUNTABLE[name]
            marks = [pytest.mark.xfail(raises=error, strict=True, reason=reason)]
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.slow(seconds=0.2)  # together over 5 s
@pytest.mark.parametrize("name", cases())
def test_counts_reproduce_peft_published_counts(name):
    published = PUBLISHED[name]
    counts = count(name)
    assert counts["base_total"] == LLAMA_3_2_3B and counts["trainable_head"] == 0
    # peft's num_total_params: every parameter of the PEFT model, the base's and the added ones
    assert int(published["num_total_params"]) == counts["base_total"] + counts["added"]
    if name == LORA_FA:  # LoRA-FA's optimizer freezes A: peft counts B only
        r, d, layers = 32, 3072, 28  # q_proj and v_proj (peft's Llama default), input width d
        lora_a = layers * 2 * r * d
        assert int(published["num_trainable_params"]) == counts["trainable"] - lora_a
    else:
        assert int(published["num_trainable_params"]) == counts["trainable"]


def test_every_published_count_has_its_folder():
    folders = {f"{p.parent.name}/{p.name}" for p in EXPERIMENTS.glob("*/*") if p.is_dir()}
    assert len(PUBLISHED) == 63 and set(PUBLISHED) <= folders and len(folders) == 71
    assert set(NOT_COUNTABLE) <= set(PUBLISHED)


def test_count_cli_takes_an_experiment_folder(capsys):
    folder = EXPERIMENTS / "lora" / "llama-3.2-3B-rank32"
    args = ["count", "--model", "llama-3.2-3b", "--peft-experiment", str(folder)]
    assert main([*args, "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    published = PUBLISHED["lora/llama-3.2-3B-rank32"]
    assert counts["trainable"] == int(published["num_trainable_params"]) == 9_175_040
    assert main([*args, "--method", "lora"]) == 2
    assert "drop --method" in capsys.readouterr().err
    assert main(["count", "--model", "llama-3.2-3b"]) == 2
    assert "needs --method or --peft-experiment" in capsys.readouterr().err


# The folders as settings ------------------------------------------------------------------


def test_a_folder_becomes_a_setting_of_its_peft_method():
    lora = read_experiment(EXPERIMENTS / "lora" / "llama-3.2-3B-rank32")
    assert (lora.method, lora.label) == ("peft:lora", "llama-3.2-3B-rank32")
    assert lora.hparams["r"] == 32 and lora.hparams["lora_alpha"] == 64
    assert lora.hparams["target_modules"] == "auto"  # null: peft's default for the model type
    bookkeeping = {"peft_type", "task_type", "base_model_name_or_path", "revision", "megatron_core"}
    assert not bookkeeping & set(lora.hparams)
    c3a = read_experiment(EXPERIMENTS / "c3a" / "llama-3.2-3B-default")
    assert c3a.hparams["target_modules"] == "v_proj,q_proj"
    assert (c3a.hparams["lr"], c3a.hparams["weight_decay"]) == (0.3, 1e-05)
    assert "fan_in_fan_out" not in c3a.hparams  # a field newer peft dropped, stored as false


def test_training_params_map_as_peft_merges_them():
    # {"optimizer_kwargs": {"lr": 0.001}} replaces the defaults' whole optimizer_kwargs in
    # peft's shallow merge: AdamW's own weight decay applies
    delora = read_experiment(EXPERIMENTS / "delora" / "llama-3.2-3B-rank32")
    assert (delora.hparams["lr"], delora.hparams["weight_decay"]) == (1e-3, ADAMW_WEIGHT_DECAY)
    adamss = read_experiment(EXPERIMENTS / "adamss" / "llama-3.2-3B-rank32")
    assert {k: adamss.hparams[k] for k in ("steps", "batch_size", "lr", "weight_decay")} == {
        "steps": 5000, "batch_size": 4, "lr": 1e-4, "weight_decay": 0.1
    }  # fmt: skip
    full = read_experiment(EXPERIMENTS / "full-finetuning" / "llama-3.2-3B-lr_0.00001")
    assert (full.method, full.hparams) == ("full", {"lr": 1e-5, "weight_decay": 0.01})


@pytest.mark.parametrize(
    "folder, message",
    [
        (BAD, r"training_params\.json: key 'use_amp' has no peftbench equivalent; valid: "),
        (EXPERIMENTS / LORA_FA, r"optimizer_type='lora-fa'; valid: 'AdamW'"),
        (
            EXPERIMENTS / "lora" / "llama-3.2-3B-rank32-riemannian",
            r"optimizer_type='riemannian'",
        ),
        (
            EXPERIMENTS / "lora" / "llama-3.2-3B-rank32-kasa",
            r"adapter_config\.json: key 'kasa_config' .* is not a hyperparameter of peft:lora",
        ),
        (EXPERIMENTS / "lora", r"holds neither adapter_config\.json nor training_params\.json"),
        (EXPERIMENTS / "nothing-here", r"is not a folder"),
    ],
)
def test_keys_without_an_equivalent_are_refused_naming_them(folder, message):
    with pytest.raises(SpecError, match=message):
        read_experiment(folder)


def sweep_config(**changes) -> dict:
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config.update(
        models=["tiny-llama"], methods=["lora"], tasks=["docstring-name"], grid={}, **changes
    )
    return config


def test_a_sweep_plans_the_folders_beside_its_methods():
    folders = [
        str(EXPERIMENTS / "lora" / "llama-3.2-3B-rank32"),
        str(EXPERIMENTS / "ia3" / "llama-3.2-3B-lr_0.001"),
    ]
    sweep = plan_sweep(sweep_config(peft_experiments=folders))
    runs = {(s.method, s.setting): s.hparams for s in sweep.specs}
    assert set(runs) == {
        ("lora", "default"),
        ("peft:lora", "llama-3.2-3B-rank32"),
        ("peft:ia3", "llama-3.2-3B-lr_0.001"),
    }
    assert runs["peft:lora", "llama-3.2-3B-rank32"]["r"] == 32
    assert runs["peft:ia3", "llama-3.2-3B-lr_0.001"]["weight_decay"] == ADAMW_WEIGHT_DECAY
    assert sweep.overrides("peft:lora", "llama-3.2-3B-rank32")["lora_alpha"] == 64


def test_a_bad_folder_stops_planning_naming_the_key():
    with pytest.raises(SweepError, match=r"peft_experiments: .*'use_amp' has no peftbench"):
        plan_sweep(sweep_config(peft_experiments=[str(BAD)]))


def test_two_folders_of_one_method_need_two_names(tmp_path):
    original = EXPERIMENTS / "lora" / "llama-3.2-3B-rank32"
    copy = tmp_path / "elsewhere" / original.name
    copy.mkdir(parents=True)
    (copy / "adapter_config.json").write_text((original / "adapter_config.json").read_text())
    config = sweep_config(peft_experiments=[str(original), str(copy)])
    with pytest.raises(SweepError, match=r"a second peft:lora folder named 'llama-3.2-3B-rank32'"):
        plan_sweep(config)
