from __future__ import annotations

import torch

from peftbench import MODELS
from peftbench.plugin.model import TransformersModel


def test_minilm_sizes_share_the_pretrained_weights():
    small = MODELS.get("minilm-l2").load(num_labels=2)
    full = MODELS.get("minilm-l6").load(num_labels=2)
    assert small.info.num_layers == 2 and full.info.num_layers == 6
    assert small.info.head_prefixes == ("classifier",)
    small_state, full_state = small.model.bert.state_dict(), full.model.bert.state_dict()
    for name, tensor in small_state.items():
        assert torch.equal(tensor, full_state[name]), name
    assert not any(".layer.2." in name for name in small_state)
    assert small.fingerprint != full.fingerprint and small.fingerprint.startswith("sha256:")


def test_minilm_l6_is_the_published_size():
    loaded = MODELS.get("minilm-l6").load(num_labels=2)
    backbone = sum(p.numel() for p in loaded.model.bert.parameters())
    # 11,918,592 embeddings + 6 x 1,774,464 layers + 147,840 pooler: the published 22.7M.
    assert backbone == 22_713_216


def test_transformers_path_loads_local_folders_like_hub_ids(tmp_path):
    # The hub code path (hf:<id>) is TransformersModel(location=<id>); a local folder exercises it.
    loaded = MODELS.get("minilm-l2").load(num_labels=3)
    loaded.model.save_pretrained(tmp_path)
    MODELS.get("minilm-l2").tokenizer().save_pretrained(tmp_path)
    local = TransformersModel(str(tmp_path))
    local.name = "local"
    again = local.load(num_labels=3)
    assert again.info.model_type == "bert" and again.info.num_layers == 2
    assert again.info.head_prefixes == ("classifier",)  # loaded from the folder, not fresh
    assert local.tokenizer()("hello world")["input_ids"][0] == 101
