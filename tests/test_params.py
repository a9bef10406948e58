"""The parameter-counting standard (docs/parameters.md): closed forms on a tiny BERT, measured
counts after a few real optimizer steps, and published counts from the shipped paper-scale
configs (meta device, no weights, no network)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from peftbench import METHODS
from peftbench.planning.counting import (
    NotApplicableError,
    adapt,
    changed_elements,
    count_model_method,
    count_static,
    count_trained,
    delta_rank,
    nbytes,
    numel,
    snapshot_base,
)
from peftbench.planning.spec import SpecError, resolve_hparams
from peftbench.plugin.method import Method
from peftbench.plugin.model import model_info
from peftbench.plugin.registry import MODELS
from peftbench.reporting.param_table import main

V, P, T, D, F, L, LABELS = 100, 64, 2, 32, 64, 2, 2  # vocab, positions, types, width, ffn, layers
HEAD = D * LABELS + LABELS  # BertForSequenceClassification's classifier
BASE = (
    (V + P + T) * D + 2 * D  # embeddings + their LayerNorm
    + L * (4 * (D * D + D) + 2 * D + (D * F + F) + (F * D + D) + 2 * D)  # layers
    + D * D + D  # pooler
)  # fmt: skip

STATIC_KEYS = {
    "base_total", "trainable", "trainable_method", "trainable_head", "added", "added_method",
    "added_head", "stored", "stored_bytes", "inference_added", "changed", "update_rank",
    "trainable_pct", "trainable_method_pct", "trainable_head_pct", "added_pct",
    "added_method_pct", "added_head_pct", "stored_pct", "inference_added_pct", "changed_pct",
    "inference_basis",
}  # fmt: skip
TRAINED_KEYS = {"stored", "stored_bytes", "stored_pct", "changed", "changed_pct", "update_rank"}


def tiny_bert() -> tuple[nn.Module, object]:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=V,
        hidden_size=D,
        num_hidden_layers=L,
        num_attention_heads=2,
        intermediate_size=F,
        max_position_embeddings=P,
        type_vocab_size=T,
        num_labels=LABELS,
    )
    model = BertForSequenceClassification(config)
    return model, model_info("tiny-bert", model)


def adapted(method_name: str, keep_values: bool = False, **overrides):
    model, info = tiny_bert()
    method = METHODS.get(method_name)
    hp = resolve_hparams(method_name, overrides)
    return (*adapt(model, method, hp, info, keep_values), method, info, hp)


def train(model: nn.Module, method: Method, steps: int = 2, batch: int = 2) -> None:
    """A few AdamW steps on random tokens (12 per example; more tokens than the width make
    full-rank updates possible)."""
    torch.manual_seed(1)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for step in range(1, steps + 1):
        ids = torch.randint(0, V, (batch, 12))
        model(input_ids=ids, labels=torch.randint(0, LABELS, (batch,))).loss.backward()
        optimizer.step()
        method.on_step(model, step)
        optimizer.zero_grad()


TOO_NARROW = {
    "peft:c3a": "block_size 256 must divide the layer width (32 here)",
    "peft:miss": "r 64 must be at most in_features (32 here)",
    "peft:road": "group_size 64 must divide out_features (32 here)",
    "peft:shira": "r 32 asks more parameters than a 32×32 layer has",
    "peft:vblora": "vector_length 256 must divide in_features (32 here)",
    "peft:waveft": "n_frequency 2592 exceeds a 32×32 layer's 1024 entries",
}
"""peft tuners whose defaults peft's own config check refuses on the tiny BERT's 32-wide layers
(they run on minilm-l2: methods/peft_tuners.csv); the test expects exactly that refusal."""


def applicable_methods() -> list:
    _, info = tiny_bert()
    return [
        pytest.param(
            name,
            marks=pytest.mark.xfail(raises=ValueError, strict=True, reason=TOO_NARROW[name]),
        )
        if name in TOO_NARROW
        else name
        for name, method in METHODS
        if method.unsupported_reason(info) is None
    ]


# Closed forms on the tiny BERT -------------------------------------------------------------


def test_tiny_bert_base_total_is_the_backbone():
    model, info = tiny_bert()
    assert snapshot_base(model, info).total == BASE
    assert sum(p.numel() for p in model.parameters()) == BASE + HEAD


def test_lora_is_r_times_din_plus_dout_per_target_matrix():
    r = 4
    model, base, method, info, _ = adapted(
        "lora", r=r, target_modules="query,value,intermediate.dense"
    )
    counts = count_static(model, method, info, base)
    expected = L * (2 * r * (D + D) + r * (D + F))
    assert counts["trainable_method"] == counts["added_method"] == expected
    assert counts["trainable_head"] == HEAD
    assert counts["added_head"] == 0  # the head is trained in place, not copied by peft
    assert counts["stored"] == expected + HEAD
    assert counts["stored_bytes"] == 4 * (expected + HEAD)  # float32
    assert counts["inference_added"] == 0  # merged into W
    assert counts["update_rank"] == {"max": r, "mean": r, "matrices": 3 * L, "method": "declared"}


def test_bitfit_is_the_sum_of_bias_elements():
    model, base, method, info, _ = adapted("bitfit")
    counts = count_static(model, method, info, base)
    biases = L * (4 * D + D + F + D + D) + D + D  # per layer + embedding LayerNorm + pooler
    assert counts["trainable_method"] == counts["stored"] - HEAD == biases
    assert counts["added"] == counts["inference_added"] == 0
    assert counts["update_rank"]["matrices"] == 0


def test_full_fine_tuning_trains_and_stores_the_whole_base():
    model, base, method, info, _ = adapted("full")
    counts = count_static(model, method, info, base)
    assert counts["base_total"] == counts["trainable_method"] == BASE
    assert counts["trainable_method_pct"] == 100.0
    assert counts["stored"] == BASE + HEAD and counts["added"] == counts["inference_added"] == 0
    assert counts["update_rank"]["max"] == D


@pytest.mark.parametrize("method_name", ["full", "bitfit", "lora"])
def test_head_is_counted_separately(method_name):
    model, base, method, info, _ = adapted(method_name)
    counts = count_static(model, method, info, base)
    assert counts["trainable_head"] == HEAD
    assert counts["trainable"] == counts["trainable_method"] + HEAD
    assert counts["trainable_head_pct"] == pytest.approx(100 * HEAD / BASE)


PROMPT_CLOSED_FORMS = {
    # method: (hyperparameters, trainable_method, stored and kept at inference: p·d or 2·L·l·d)
    "prompt_tuning": ({"num_virtual_tokens": 20}, 20 * D, 20 * D),
    "p_tuning_v2": ({"num_virtual_tokens": 20}, 2 * L * 20 * D, 2 * L * 20 * D),
    # The MLP (embedding l·d, d -> h -> 2·L·d) is trained; only the prefix it computes is stored.
    "prefix_tuning": (
        {"num_virtual_tokens": 10, "prefix_projection": True, "encoder_hidden_size": 16},
        10 * D + (D * 16 + 16) + (16 * 2 * L * D + 2 * L * D),
        2 * L * 10 * D,
    ),
}


@pytest.mark.parametrize("method_name", sorted(set(PROMPT_CLOSED_FORMS) & set(METHODS.names())))
def test_prompt_methods_closed_forms(method_name):
    overrides, trainable, kept = PROMPT_CLOSED_FORMS[method_name]
    model, base, method, info, _ = adapted(method_name, **overrides)
    counts = count_static(model, method, info, base)
    assert counts["trainable_method"] == counts["added_method"] == trainable
    assert counts["stored"] == kept + HEAD and counts["inference_added"] == kept
    assert counts["added_head"] == HEAD  # peft's prompt models train a copy of the head


class KeptVector(Method):
    """Test-only additive method: one trainable vector that stays at inference (no merge)."""

    def apply(self, model, hp, info):
        model.requires_grad_(False)
        model.register_parameter("kept", nn.Parameter(torch.zeros(7)))
        return model

    def merge(self, model):
        return None


def test_unmerged_additions_count_at_inference_and_by_identity():
    model, info = tiny_bert()
    model, base = adapt(model, KeptVector(), {}, info)
    counts = count_static(model, KeptVector(), info, base)
    assert counts["added"] == counts["added_method"] == counts["trainable_method"] == 7
    assert counts["inference_added"] == 7 and counts["stored"] == 7 + HEAD


def test_quantized_tensors_count_logical_elements_and_real_bytes():
    bnb = pytest.importorskip("bitsandbytes")
    model, info = tiny_bert()
    query = model.bert.encoder.layer[0].attention.self.query
    quantized = bnb.nn.Linear4bit(D, D, compute_dtype=torch.float32, quant_type="nf4")
    quantized.weight = bnb.nn.Params4bit(query.weight.data, requires_grad=False, quant_type="nf4")
    quantized.bias = query.bias
    model.bert.encoder.layer[0].attention.self.query = quantized.to("cpu")
    weight = model.bert.encoder.layer[0].attention.self.query.weight
    assert weight.numel() == D * D // 2 and numel(weight) == D * D  # 4 bits per element
    assert D * D // 2 < nbytes(weight) < 4 * D * D  # packed data + quantization state < fp32
    assert snapshot_base(model, info).total == BASE


# Measured after real training --------------------------------------------------------------


@pytest.mark.parametrize("method_name", applicable_methods())
def test_frozen_base_weights_never_change_and_stored_is_measured(method_name):
    model, base, method, info, _ = adapted(method_name, keep_values=True)
    live = {id(p) for p in model.parameters() if p.requires_grad}  # QLoRA replaces base weights
    frozen = [n for n in base.backbone if id(base.params[n]) not in live]
    train(model, method)
    changed = changed_elements(base)
    assert all(changed[name] == 0 for name in frozen)
    assert any(changed.values()) == (len(frozen) < len(base.backbone))
    declared = count_static(model, method, info, base)  # the artifact may depend on values
    trained = count_trained(model, method, info, base)
    assert set(declared) == STATIC_KEYS and set(trained) == TRAINED_KEYS
    assert trained["stored"] == declared["stored"] > 0
    assert trained["stored_bytes"] == declared["stored_bytes"]
    assert trained["changed"]["unmerged"] == sum(changed.values())
    json.dumps({**declared, **trained})


def test_lora_merge_changes_only_the_target_weights():
    model, base, method, info, _ = adapted("lora", keep_values=True)
    train(model, method)
    trained = count_trained(model, method, info, base)
    assert count_trained(copy.deepcopy(model), method, info, base, inplace=True) == trained
    merged = changed_elements(base, method.merge(model))
    targets = {n for n in base.backbone if n.endswith(("query.weight", "value.weight"))}
    assert {n for n, c in merged.items() if c} == targets
    assert trained["changed"] == {"unmerged": 0, "merged": sum(merged.values())}
    assert trained["changed_pct"]["merged"] == pytest.approx(100 * 2 * L * D * D / BASE)


def test_lora_update_rank_is_at_most_r():
    r = 4
    model, base, method, info, _ = adapted("lora", keep_values=True, r=r)
    train(model, method)
    rank = count_trained(model, method, info, base)["update_rank"]
    assert rank["method"] == "svd" and rank["matrices"] == 2 * L
    assert 0 < rank["max"] <= r
    declared = count_trained(model, method, info, base, svd_max_cost=0)["update_rank"]
    assert declared == {"max": r, "mean": r, "matrices": 2 * L, "method": "declared"}


def test_full_fine_tuning_update_rank_is_full():
    model, base, method, info, _ = adapted("full", keep_values=True)
    train(model, method, steps=3, batch=8)
    for name in base.backbone:
        if name.endswith(("query.weight", "intermediate.dense.weight")):
            assert delta_rank(base.values[name], base.params[name]) == D
    rank = count_trained(model, method, info, base)["update_rank"]
    assert rank["method"] == "svd" and rank["max"] == D


def test_rounding_in_the_merge_is_not_rank():
    torch.manual_seed(0)
    weight = torch.randn(64, 48)
    update = 1e-3 * torch.randn(64, 3) @ torch.randn(3, 48)
    assert delta_rank(weight, weight + update) == 3
    assert delta_rank(weight, weight.clone()) == 0


# Published counts, from the shipped configs on the meta device --------------------------


@pytest.mark.parametrize(
    ("model_name", "method_name", "overrides", "expected"),
    [
        # Hu et al. 2022 (LoRA), Table 2: LoRA on W_q, W_v with r=8, head excluded.
        ("roberta-base", "lora", {"r": 8, "target_modules": "query,value"}, 294_912),
        ("roberta-large", "lora", {"r": 8, "target_modules": "query,value"}, 786_432),
        # Ben Zaken et al. 2022 (BitFit), Table 1/§3: all bias terms of BERT-large, "0.08%".
        ("bert-large", "bitfit", {}, 272_384),
        # LoRA r=8 on q_proj, v_proj of Llama-2-7B: 32 layers x 2 x 8 x (4096 + 4096).
        ("llama-2-7b", "lora", {"r": 8, "target_modules": "q_proj,v_proj"}, 4_194_304),
    ],
)
def test_published_trainable_counts(model_name, method_name, overrides, expected):
    counts = count_model_method(model_name, method_name, overrides)
    assert counts["trainable_method"] == expected


def test_bitfit_on_bert_large_is_0_08_percent():
    assert round(count_model_method("bert-large", "bitfit")["trainable_method_pct"], 2) == 0.08


@pytest.mark.parametrize(
    ("model_name", "checkpoint_total", "dropped"),
    [
        # Totals of the hub checkpoints' base models (transformers' num_parameters()); the
        # sequence-classification model drops RoBERTa's pooler and the Llamas' LM head.
        ("bert-base", 109_482_240, 0),
        ("bert-large", 335_141_888, 0),
        ("roberta-base", 124_645_632, 768 * 768 + 768),
        ("roberta-large", 355_359_744, 1024 * 1024 + 1024),
        ("gpt2-medium", 354_823_168, 0),
        ("gpt2-large", 774_030_080, 0),
        ("t5-base", 222_903_552, 0),
        ("llama-2-7b", 6_738_415_616, 32_000 * 4096),
        ("llama-3-70b", 70_553_706_496, 128_256 * 8192),
    ],
)
def test_paper_scale_configs_reproduce_checkpoint_sizes(model_name, checkpoint_total, dropped):
    loaded = MODELS.get(model_name).build_empty(num_labels=2)
    assert snapshot_base(loaded.model, loaded.info).total == checkpoint_total - dropped


def test_llama_3_70b_lora_on_every_linear_layer():
    targets = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    counts = count_model_method("llama-3-70b", "lora", {"target_modules": targets})
    d, kv, ffn, r = 8192, 1024, 28672, 8  # 8 key-value heads of 128
    per_layer = r * (2 * (d + d) + 2 * (d + kv) + 3 * (d + ffn))
    assert counts["trainable_method"] == 80 * per_layer
    assert counts["inference_added"] == 0


# count_model_method's errors ------------------------------------------------------------


def test_unknown_hyperparameter_names_the_valid_ones():
    with pytest.raises(SpecError, match="'rank'.*valid: .*alpha.*target_modules"):
        count_model_method("roberta-base", "lora", {"rank": "4"})


def test_method_that_does_not_apply_says_why():
    with pytest.raises(NotApplicableError, match="bitfit.*llama-2-7b.*no bias"):
        count_model_method("llama-2-7b", "bitfit")


def test_set_values_are_parsed_to_the_default_types():
    counts = count_model_method("roberta-base", "lora", {"r": "4"})
    assert counts["trainable_method"] == 294_912 // 2


# Quantized bases: precision is the one way to quantize ---------------------------------------

QLORA_AS_LORA = {"r": 64, "alpha": 16, "dropout": 0.1, "target_modules": "all-linear"}


def test_qlora_counts_are_lora_at_nf4_field_by_field():
    pytest.importorskip("bitsandbytes")
    qlora = count_model_method("llama-2-7b", "qlora")
    lora_nf4 = count_model_method("llama-2-7b", "lora", {**QLORA_AS_LORA, "precision": "nf4"})
    assert qlora == lora_nf4
    # Against the quantized base: LoRA is all that is added, and it is not merged away.
    assert qlora["added"] == qlora["trainable_method"] == qlora["inference_added"] == 159_907_840
    assert qlora["update_rank"] == {"max": 64, "mean": 64, "matrices": 224, "method": "declared"}


def test_a_quantized_base_differs_from_fp32_only_in_not_merging():
    pytest.importorskip("bitsandbytes")
    fp32 = count_model_method("llama-2-7b", "lora", QLORA_AS_LORA)
    nf4 = count_model_method("llama-2-7b", "lora", {**QLORA_AS_LORA, "precision": "nf4"})
    differ = {k for k in fp32 if fp32[k] != nf4[k]}
    assert differ == {"inference_added", "inference_added_pct", "inference_basis"}
    assert fp32["inference_basis"] == "merged" and nf4["inference_basis"].startswith("unmerged")
    assert fp32["inference_added"] == 0 and nf4["inference_added"] == nf4["added_method"]


@pytest.mark.parametrize(("method_name", "precision"), [("qlora", "nf4"), ("lora_int8", "int8")])
def test_quantized_presets_refuse_another_precision(method_name, precision):
    assert METHODS.get(method_name).defaults["precision"] == precision
    assert METHODS.get(method_name).check_hparams(resolve_hparams(method_name)) == []
    with pytest.raises(SpecError, match=rf"precision='fp32'.*valid: {precision}.*use lora"):
        count_model_method("bert-base", method_name, {"precision": "fp32"})


def test_base_weights_cannot_train_on_a_quantized_base():
    with pytest.raises(NotApplicableError, match="full.*trains base weights.*nf4"):
        count_model_method("bert-base", "full", {"precision": "nf4"})


def test_ia3_declares_no_rank_bound_below_the_matrix():
    model, base, method, info, _ = adapted("ia3")
    rank = count_static(model, method, info, base)["update_rank"]
    assert rank["method"] == "declared" and rank["matrices"] > 0
    assert rank["max"] == rank["mean"] == D  # min(m, n) of every square or D×F matrix


# The table ----------------------------------------------------------------------------------


def test_param_table_lists_counts_and_unsupported_combinations(tmp_path):
    out = tmp_path / "reports" / "param_counts.md"
    main([str(out), "--models", "bert-large", "llama-2-7b", "--methods", "bitfit", "--set", "lr=1"])
    table = out.read_text()
    assert "| bert-large | bitfit | 335,141,888 | 272,384 (0.0813%) | 2,050 |" in table
    assert "| llama-2-7b | bitfit | n/a | bitfit does not apply to llama-2-7b" in table


def test_param_table_rejects_a_key_no_method_has():
    with pytest.raises(SpecError, match=r"\['rank'\]; valid: .*\br\b"):
        main(["unused.md", "--models", "bert-base", "--methods", "lora", "--set", "rank=4"])


def test_tensors_peft_lists_under_several_names_are_stored_once():
    from peft import RandLoraConfig, get_peft_model_state_dict

    from peftbench.methods._peft import PeftMethod

    class RandLoRA(PeftMethod):
        def peft_config(self, hp, info):
            return RandLoraConfig(r=8, target_modules=["query", "value"])

    model, info = tiny_bert()
    model, base = adapt(model, RandLoRA(), {}, info, keep_values=True)
    state = get_peft_model_state_dict(model)
    shared = [k for k in state if k.endswith(("randlora_A", "randlora_B"))]
    assert len(shared) == 2 * (2 * L + 1)  # under every layer's name and the model's
    copies = sum(state[k].numel() for k in shared if not k.startswith("base_model.randlora_"))
    declared = count_static(model, RandLoRA(), info, base)["stored"]
    assert declared == sum(t.numel() for t in state.values()) - copies + HEAD
    assert count_trained(model, RandLoRA(), info, base)["stored"] == declared  # saved, read back
