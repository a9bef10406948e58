"""The update's rank for any peft tuner, with no per-method code: each tuner's declared rule
(methods/_peft.py, RANK_RULES; docs/parameters.md) against the rank measured on the merged
ΔW of a tiny random BERT whose trainable parameters are set to random values (peft starts many
tuners at ΔW = 0); a third-party plugin that calls peft directly and implements no hook: null
with the reason without weights, measured after a real run; counts from the meta device."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import peft
import pytest
import torch
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
from transformers import BertConfig, BertForSequenceClassification

from peftbench.methods._peft import (
    FULL_RANK_RULE,
    PROMPT_LEARNING,
    RANK_RULES,
    UNMERGEABLE,
    PeftMethod,
    rank_rule,
)
from peftbench.planning.counting import (
    adapt,
    base_values,
    count_static,
    count_trained,
    declared_ranks,
    delta_rank,
    identity_names,
    served_weights,
)
from peftbench.plugin.model import model_info
from peftbench.records.record import read_record
from tests.conftest import REPO, run_cli
from tests.test_faults import on_pythonpath

D, F = 64, 96  # width, feed-forward width: every rule below stays under min(m, n) = 64
T = ["query", "value", "intermediate.dense"]

CASES = {
    # name: (config, the rank the rule declares per adapted matrix, whether it is attained)
    "lora": (peft.LoraConfig(r=4, target_modules=T), 4, True),
    "lora-dora": (peft.LoraConfig(r=4, target_modules=T, use_dora=True), D, True),
    "lora-pissa": (peft.LoraConfig(r=4, target_modules=T, init_lora_weights="pissa"), 8, True),
    "lora-olora": (peft.LoraConfig(r=4, target_modules=T, init_lora_weights="olora"), 8, True),
    "lora-rslora": (peft.LoraConfig(r=4, target_modules=T, use_rslora=True), 4, True),
    "adalora": (peft.AdaLoraConfig(init_r=4, target_r=2, total_step=10, target_modules=T), 4, True),
    "adamss": (
        peft.AdamssConfig(r=16, num_subspaces=3, subspace_rank=1, target_modules=T),
        3,
        True,
    ),
    "loha": (peft.LoHaConfig(r=3, target_modules=T), 9, True),  # r²
    "lokr": (peft.LoKrConfig(r=2, target_modules=T), 16, True),  # W1 8×8, full ⊗ W2 of rank 2
    "lokr-both": (
        peft.LoKrConfig(r=2, decompose_both=True, decompose_factor=8, target_modules=T),
        4,
        True,
    ),  # rank 2 ⊗ rank 2
    "vera": (peft.VeraConfig(r=8, target_modules=T), 8, True),
    "pvera": (peft.PveraConfig(r=8, target_modules=T), 8, True),
    "hra": (peft.HRAConfig(r=6, target_modules=T), 6, True),
    "vblora": (peft.VBLoRAConfig(r=4, vector_length=16, num_vectors=32, target_modules=T), 4, True),
    "unilora": (peft.UniLoraConfig(r=4, target_modules=T), 4, True),
    "delora": (peft.DeloraConfig(r=4, target_modules=T), 4, True),
    "tinylora": (peft.TinyLoraConfig(r=2, target_modules=T), 2, True),
    "psoft": (peft.PsoftConfig(r=8, target_modules=T), 8, True),
    "deft": (peft.DeftConfig(r=4, target_modules=T), 4, True),
    "peanut": (peft.PeanutConfig(r=4, target_modules=T), 4, True),
    "miss": (peft.MissConfig(r=8, target_modules=T), 8, True),
    "gralora": (peft.GraloraConfig(r=8, gralora_k=2, target_modules=T), 16, True),
    "fourierft": (peft.FourierFTConfig(n_frequency=5, target_modules=T), 10, False),
    "waveft": (peft.WaveFTConfig(n_frequency=16, target_modules=T), 16, False),
    "supertuning": (peft.SupertuningConfig(sparsity=0.998, target_modules=T), None, False),
    "trainable-tokens": (peft.TrainableTokensConfig(token_indices=[1, 2, 3]), 3, True),
    "ia3": (peft.IA3Config(target_modules=T, feedforward_modules=["intermediate.dense"]), D, True),
    "oft": (peft.OFTConfig(oft_block_size=8, target_modules=T), D, True),
    "boft": (peft.BOFTConfig(boft_block_size=8, target_modules=T), D, True),
    "road": (peft.RoadConfig(group_size=16, target_modules=T), D, True),
    "hira": (peft.HiraConfig(r=4, target_modules=T), D, True),
    "c3a": (peft.C3AConfig(block_size=16, target_modules=T), D, True),
    "randlora": (peft.RandLoraConfig(r=8, target_modules=T), D, True),
    "shira": (peft.ShiraConfig(r=1, target_modules=T), D, False),  # r·(m + n) entries > 64
    "osf": (peft.OSFConfig(target_modules=T), D, False),
    "glora": (peft.GloraConfig(r=4, target_modules=T), D, False),
}
"""Every merging tuner peft 0.21.2 ships that applies to a BERT classifier, at settings whose
rule is below the matrix where the tuner has one. FRoD is left out (its decomposition is slow);
``None``: the rule depends on the layer (SuperTuning: its selected entries)."""

NO_WEIGHT_CHANGE = {
    "beft": peft.BeftConfig(target_modules=T),  # biases only
    "ln-tuning": peft.LNTuningConfig(target_modules=["LayerNorm"]),  # 1-D norms only
}


class Tuner(PeftMethod):
    """A peft config as a method: the generic PeftMethod hooks, nothing per tuner."""

    name = "tuner"

    def __init__(self, config) -> None:
        self.config = config

    def peft_config(self, hp, info):
        return copy.deepcopy(self.config)


def tiny_bert(device: str | None = None):
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50, hidden_size=D, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=F, max_position_embeddings=32, num_labels=2,
    )  # fmt: skip
    with torch.device(device) if device else torch.device("cpu"):
        model = BertForSequenceClassification(config)
    return model, model_info("tiny-bert", model)


def perturbed(config):
    """The tuner on the tiny BERT, its trainable parameters moved by random values (a non-zero
    update), with the base snapshot."""
    model, info = tiny_bert()
    method = Tuner(config)
    model, base = adapt(model, method, {}, info, keep_values=True)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad and not method.is_head(name, info):
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model, base, method, info


def measured_ranks(model, base, method) -> dict[str, int]:
    """The rank of each merged ΔW that is not zero (SVD), by base name."""
    merged = method.merge(copy.deepcopy(model))
    served = served_weights(merged, identity_names(model, base), base)
    values = base_values(base)
    return {
        name: delta_rank(values[name], served[name])
        for name in base.backbone
        if values[name].ndim == 2 and not torch.equal(served[name].detach(), values[name])
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_declared_rule_bounds_the_measured_rank(case):
    config, rule, attained = CASES[case]
    model, base, method, _ = perturbed(config)
    declared = declared_ranks(model, method, base)
    measured = measured_ranks(model, base, method)
    assert measured and set(measured) == set(declared)  # the changed matrices, all declared
    for name, rank in measured.items():
        assert isinstance(declared[name], int) and 0 < rank <= declared[name], (name, rank)
        if rule is not None:
            assert declared[name] == rule, name
        if attained:
            assert rank == declared[name], name  # generic values reach the closed form


@pytest.mark.parametrize("case", sorted(NO_WEIGHT_CHANGE))
def test_tuners_that_change_no_matrix_declare_none(case):
    model, base, method, info = perturbed(NO_WEIGHT_CHANGE[case])
    assert measured_ranks(model, base, method) == {}
    rank = count_static(model, method, info, base)["update_rank"]
    assert rank["matrices"] == 0 and rank["max"] == 0


def test_lokr_rank_is_the_product_of_its_factors_ranks():
    model, base, method, _ = perturbed(CASES["lokr-both"][0])
    layer = model.base_model.model.bert.encoder.layer[0].attention.self.query
    w1 = layer.lokr_w1_a["default"] @ layer.lokr_w1_b["default"]
    w2 = layer.lokr_w2_a["default"] @ layer.lokr_w2_b["default"]
    ranks = measured_ranks(model, base, method)
    query = next(n for n in ranks if "query" in n)
    product = int(torch.linalg.matrix_rank(w1.detach())) * int(
        torch.linalg.matrix_rank(w2.detach())
    )
    assert ranks[query] == product == 4


def test_trained_counts_report_the_measured_rank_and_the_declared_one_beyond_svd():
    model, base, method, info = perturbed(CASES["loha"][0])
    trained = count_trained(model, method, info, base)["update_rank"]
    assert trained == {"max": 9, "mean": 9.0, "matrices": 3, "method": "svd"}
    declared = count_trained(model, method, info, base, svd_max_cost=0)["update_rank"]
    assert declared == {"max": 9, "mean": 9.0, "matrices": 3, "method": "declared"}


@pytest.mark.parametrize("case", ["lora", "lora-dora", "loha", "ia3", "vera", "oft", "fourierft"])
def test_meta_device_declares_what_real_weights_declare(case):
    config = CASES[case][0]
    real_model, real_base, method, info = perturbed(config)
    model, info = tiny_bert("meta")
    model, base = adapt(model, Tuner(config), {}, info)
    meta = count_static(model, method, info, base, inplace=True)
    real = count_static(real_model, method, info, real_base)
    assert meta["update_rank"] == real["update_rank"] and meta["update_rank"]["max"] > 0
    assert meta["inference_added"] == real["inference_added"] == 0  # merged away
    assert meta["inference_basis"] == "merged"


def unmergeable_cases():
    return {
        "LILY": (peft.LilyConfig(r=4, target_modules=T), "depends on the batch"),
        "POLY": (peft.PolyConfig(r=4, target_modules=T), None),
    }


@pytest.mark.parametrize("peft_type", sorted(unmergeable_cases()))
def test_unmergeable_tuners_are_those_peft_cannot_merge(peft_type):
    config, reason = unmergeable_cases()[peft_type]
    assert peft_type in UNMERGEABLE
    model, info = tiny_bert()
    model = peft.get_peft_model(model, config)
    with pytest.raises(NotImplementedError):
        copy.deepcopy(model).merge_and_unload()
    assert Tuner(config).merge(model) is None
    if reason:  # its rank: null with the reason, never a number
        adapted, base = adapt(tiny_bert()[0], Tuner(config), {}, info)
        counts = count_static(adapted, Tuner(config), info, base)
        assert counts["update_rank"]["max"] is None and reason in counts["update_rank"]["reason"]
        assert counts["inference_basis"].startswith("unmerged")
        assert counts["inference_added"] == counts["added_method"] > 0


def test_merging_tuners_are_not_listed_unmergeable_and_prompts_are_known():
    merging = {config.peft_type.value for config, *_ in CASES.values()}
    assert not merging & set(UNMERGEABLE)
    prompts = {
        t.value
        for t in peft.PeftType
        if issubclass(PEFT_TYPE_TO_CONFIG_MAPPING[t], peft.PromptLearningConfig)
    }
    assert prompts == PROMPT_LEARNING


def test_every_rule_is_in_the_docs_table():
    table = (REPO / "docs" / "parameters.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| (.+?) \|$", table, flags=re.M))
    for peft_type in [t.value for t in peft.PeftType]:
        assert rows.get(peft_type) == rank_rule(peft_type), peft_type
    assert " ".join(FULL_RANK_RULE.split()) in " ".join(table.split())
    assert set(RANK_RULES) <= set(rows)


class Unmerged(Tuner):
    """The tuner served as it is: its model keeps peft's layers (no merge hook)."""

    def merge(self, model):
        return model


def test_a_wrapped_layer_serves_the_weight_the_merge_writes():
    model, base, method, info = perturbed(CASES["lora-dora"][0])
    merged = dict(method.merge(copy.deepcopy(model)).named_parameters())
    served = served_weights(copy.deepcopy(model), identity_names(model, base), base)
    values = base_values(base)
    adapted = [n for n in base.backbone if n.endswith(("query.weight", "dense.weight"))]
    for name in adapted:
        assert torch.allclose(served[name].float(), merged[name], atol=1e-6)
        assert delta_rank(values[name], served[name]) == delta_rank(values[name], merged[name])
    trained = count_trained(model, Unmerged(CASES["lora-dora"][0]), info, base)
    assert trained["update_rank"] == count_trained(model, method, info, base)["update_rank"]
    assert trained["changed"]["merged"] > 0


# A third-party plugin: peft called directly, no counting hooks -------------------------------

PLUGIN = '''"""DoRA through peft, as a third party writes it: no peftbench hook beyond apply."""
from peftbench import register_method
from peftbench.plugin.method import HParam, Method


@register_method("thirdparty-dora")
class ThirdPartyDoRA(Method):
    description = "DoRA straight through peft.get_peft_model"
    hyperparameters = {"lr": HParam(5e-4, "learning rate")}

    def apply(self, model, hp, info):
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"], use_dora=True)
        return get_peft_model(model, config)
'''


@pytest.fixture
def third_party(tmp_path, monkeypatch) -> Path:
    """The plugin installed on PYTHONPATH with a dist-info declaring its entry point."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "thirdparty_dora.py").write_text(PLUGIN)
    info = root / "thirdparty_dora-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-dora\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[peftbench.methods]\ndora = thirdparty_dora\n")
    on_pythonpath(monkeypatch, root)
    return root


LORA_QV = 2 * 2 * 8 * (384 + 384)  # minilm-l2: 2 layers × query, value × r·(d_in + d_out)
MAGNITUDE = 2 * 2 * 384  # DoRA: one magnitude per output of each adapted matrix


@pytest.mark.slow
def test_third_party_dora_counts_without_weights_say_the_rank_needs_them(third_party):
    out = run_cli("count", "--model", "minilm-l2", "--method", "thirdparty-dora", "--json")
    counts = json.loads(out.stdout)
    assert counts["trainable_method"] == counts["added_method"] == LORA_QV + MAGNITUDE
    assert counts["trainable_head"] == 2 * 384 + 2  # its wrapper's names hide the head: found
    rank = counts["update_rank"]
    assert rank["max"] is None and rank["mean"] is None and rank["matrices"] == 4
    assert "measured only on real weights: run the method" in rank["reason"]
    assert counts["inference_basis"].startswith("unmerged")  # its model serves the wrappers
    assert counts["inference_added"] == LORA_QV + MAGNITUDE


@pytest.mark.slow
def test_third_party_dora_run_measures_the_full_rank(third_party, tmp_path):
    run_cli(
        "run", "--model", "minilm-l2", "--method", "thirdparty-dora", "--task", "docstring-match",
        "--seed", "0", "--set", "steps=3", "--set", "batch_size=8", "--set", "max_length=32",
        "--set", "max_eval_examples=16", "--set", "lr=0.05", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    record = read_record(tmp_path / "run" / "result.json")
    assert record["status"]["code"] == "ok", record["status"]
    params = record["params"]
    assert params["trainable_method"] == LORA_QV + MAGNITUDE and params["trainable_head"] == 770
    # DoRA's magnitude rescales every column of W + B·A: ΔW is full rank, not r = 8.
    assert params["update_rank"]["method"] == "svd" and params["update_rank"]["matrices"] == 4
    assert params["update_rank"]["max"] == 384 and params["update_rank"]["mean"] > 8
    assert params["changed"]["unmerged"] == 0  # W itself is frozen
    assert params["changed"]["merged"] > 0.99 * 4 * 384 * 384  # the served weights all move
