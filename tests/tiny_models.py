"""Tiny random transformers for tests and the GPU smoke check: one place for their shapes.

Each is a few hundred thousand parameters at most, built from a config (nothing downloads):
``tiny_config("llama")`` and the like, or ``fp16_checkpoint(folder)`` for a saved float16
Llama. ``benchmarks/gpu_smoke.py`` imports this module too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_VOCAB = {"vocab_size": 128, "bos_token_id": 1, "eos_token_id": 1, "pad_token_id": 0}
"""A 128-token vocabulary: 0 pads, 1 begins and ends; random ids are drawn from 2 up."""

TINY_DECODERS = {
    "gpt2": {"n_layer": 2, "n_embd": 64, "n_head": 4, "n_positions": 64},
    "llama": {
        "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
    },
}  # fmt: skip
"""Two-layer decoders of width 64 (Llama with grouped-query attention: 2 key/value heads)."""

TINY_ENCODERS = {
    "bert": {
        "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
        "num_attention_heads": 4, "max_position_embeddings": 64,
    },
}  # fmt: skip

TINY_SIZES = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 4, "intermediate_size": 64, "n_inner": 64, "embedding_size": 32,
    "vocab_size": 128, "max_position_embeddings": 64, "pad_token_id": 0,
    "bos_token_id": 1, "eos_token_id": 1,
}  # fmt: skip
"""Sizes that shrink any architecture's default config (set those of its attributes it has)."""


def tiny_config(model_type: str, **changes: Any):
    """The tiny config of ``model_type`` (a key of :data:`TINY_DECODERS` or
    :data:`TINY_ENCODERS`), with ``changes`` on top (``num_labels=2``, say)."""
    from transformers import AutoConfig

    shape = {**TINY_DECODERS, **TINY_ENCODERS}[model_type]
    return AutoConfig.for_model(model_type, **{**TINY_VOCAB, **shape, **changes})


def shrunk_config(model_type: str):
    """Any architecture's default config with :data:`TINY_SIZES` applied where it has them."""
    from transformers import CONFIG_MAPPING

    config = CONFIG_MAPPING[model_type]()
    for key, value in TINY_SIZES.items():
        if hasattr(config, key):
            setattr(config, key, value)
    return config


def fp16_checkpoint(folder: Path) -> Path:
    """A tiny random Llama with a language-model head, saved in float16 to ``folder``."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama"))
    model.to(torch.float16).save_pretrained(folder)
    return folder
