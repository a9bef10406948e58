"""LoRA's variants as options of ``lora`` (peft's): DoRA, rsLoRA, the initialisations and the
optimizers peft ships for LoRA (LoRA+, LoRA-FA). Counts against their closed forms on
minilm-l2 (r = 8 on query and value: 2 layers × 2 matrices of 384 × 384), refusals at plan
time with the reason, and a few real training steps per variant."""

from __future__ import annotations

import math

import pytest

from peftbench import METHODS
from peftbench.planning.counting import adapt, count_model_method
from peftbench.planning.spec import SpecError, resolve_hparams, resolve_spec
from peftbench.plugin.registry import MODELS
from peftbench.run.runner import execute

R, D, MATRICES = 8, 384, 4
LORA = MATRICES * R * (D + D)  # A: r×d_in, B: d_out×r per adapted matrix
HEAD = 2 * D + 2
TINY = {
    "steps": 3,
    "batch_size": 8,
    "max_length": 32,
    "max_eval_examples": 16,
    "forgetting_texts": 4,
}

VARIANTS = {
    # --set values: (trainable_method, added_method, declared update_rank.max)
    "dora": ({"use_dora": True}, LORA + MATRICES * D, LORA + MATRICES * D, D),  # + magnitudes
    "rslora": ({"use_rslora": True}, LORA, LORA, R),
    "gaussian": ({"init_lora_weights": "gaussian"}, LORA, LORA, R),
    "pissa": ({"init_lora_weights": "pissa"}, LORA, LORA, 2 * R),  # B·A − B₀·A₀
    "pissa-niter": ({"init_lora_weights": "pissa_niter_2"}, LORA, LORA, 2 * R),
    "olora": ({"init_lora_weights": "olora"}, LORA, LORA, 2 * R),
    "orthogonal": ({"init_lora_weights": "orthogonal"}, LORA, LORA, R),
    "mica": ({"init_lora_weights": "mica"}, MATRICES * R * D, LORA, R),  # B frozen: A trains
    "loraplus": ({"optimizer": "loraplus"}, LORA, LORA, R),
    "lorafa": ({"optimizer": "lorafa"}, MATRICES * R * D, LORA, R),  # A frozen: B trains
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_counts_follow_their_closed_forms(variant):
    overrides, trainable, added, rank = VARIANTS[variant]
    counts = count_model_method("minilm-l2", "lora", overrides)
    assert counts["trainable_method"] == trainable and counts["added_method"] == added
    assert counts["stored"] == added + HEAD  # A is stored even when frozen: it rebuilds ΔW
    assert counts["inference_added"] == 0 and counts["inference_basis"] == "merged"
    assert counts["update_rank"] == {
        "max": rank, "mean": float(rank), "matrices": MATRICES, "method": "declared"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"init_lora_weights": "eva"}, "peft.initialize_lora_eva_weights"),
        ({"init_lora_weights": "corda"}, "preprocess_corda"),
        ({"init_lora_weights": "loftq"}, "CUDA or XPU"),
        ({"init_lora_weights": "pissa_niter_x"}, "valid: default, gaussian, pissa"),
        ({"init_lora_weights": "true"}, "valid: default"),  # lora's spelling is default
        ({"init_lora_weights": "orthogonal", "r": 5}, "even r"),
        ({"optimizer": "sgd"}, "valid: adamw, loraplus, lorafa"),
        ({"optimizer": "lorafa", "use_dora": True}, "DoRA's magnitude"),
        ({"optimizer": "loraplus", "head_lr": 1e-3}, "valid: head_lr=0"),
        ({"loraplus_lr_ratio": 0.5}, "must be between 1"),
    ],
)
def test_variants_that_cannot_run_are_refused_at_plan_time(overrides, message):
    with pytest.raises(SpecError, match=message):
        resolve_hparams("lora", overrides)


def adapted_minilm(overrides):
    loaded = MODELS.get("minilm-l2").load(num_labels=2, head="classification")
    method, hp = METHODS.get("lora"), resolve_hparams("lora", overrides)
    model, _ = adapt(loaded.model, method, hp, loaded.info)
    return model, method, hp


def test_loraplus_trains_b_at_ratio_times_a():
    model, method, hp = adapted_minilm({"optimizer": "loraplus", "loraplus_lr_ratio": 4})
    optimizer = method.optimizer(model, hp, [])
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    named = dict(model.named_parameters())
    a = [rate[id(p)] for n, p in named.items() if ".lora_A." in n]
    b = [rate[id(p)] for n, p in named.items() if ".lora_B." in n]
    assert len(a) == len(b) == MATRICES
    assert set(a) == {hp["lr"]} and set(b) == {4 * hp["lr"]}


def test_lorafa_freezes_a_before_counting_and_its_optimizer_keeps_it():
    model, method, hp = adapted_minilm({"optimizer": "lorafa"})
    a = [p for n, p in model.named_parameters() if ".lora_A." in n]
    assert len(a) == MATRICES and not any(p.requires_grad for p in a)
    optimizer = method.optimizer(model, hp, [])
    assert type(optimizer).__name__ == "LoraFAOptimizer"
    assert METHODS.get("lora").optimizer(model, resolve_hparams("lora"), []) is None  # AdamW


@pytest.mark.slow(seconds=3)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_variant_trains_and_its_record_says_which_ran(variant, tmp_path):
    overrides, trainable, _, rank = VARIANTS[variant]
    spec = resolve_spec("minilm-l2", "lora", "docstring-match", 0, {**TINY, **overrides})
    record = execute(spec, tmp_path / "run", threads=1, lock_dir=tmp_path / "locks")
    assert record["status"]["code"] == "ok", record["status"]
    assert all(math.isfinite(loss) for loss in record["training"]["losses"])
    assert {k: record["spec"]["hparams"][k] for k in overrides} == overrides  # the variant run
    params = record["params"]
    assert params["trainable_method"] == trainable
    measured = params["update_rank"]
    assert measured["method"] == "svd" and measured["matrices"] == MATRICES
    assert R <= measured["max"] <= rank  # at least LoRA's r, at most the variant's rule
    moved = variant in ("pissa", "pissa-niter", "olora")  # B₀·A₀ leaves W when applied
    assert (params["changed"]["unmerged"] > 0) == moved


def test_the_rule_lora_shows_names_its_variants():
    rule = METHODS.get("lora").rank_rule
    assert rule.startswith("r (ΔW = B·A)") and "DoRA" in rule and "2r" in rule


def test_peft_lora_takes_the_same_variants():
    dora = count_model_method("minilm-l2", "peft:lora", {"use_dora": "true", "r": "8"})
    assert dora["trainable_method"] == LORA + MATRICES * D
    assert dora["update_rank"]["max"] == D
    pissa = count_model_method("minilm-l2", "peft:lora", {"init_lora_weights": "pissa", "r": "8"})
    assert pissa["update_rank"]["max"] == 2 * R
    with pytest.raises(SpecError, match="peft.initialize_lora_eva_weights"):
        resolve_hparams("peft:lora", {"init_lora_weights": "eva"})
