"""What peftbench's own methods (Freeze, Houlsby, Pfeiffer, MAM, UniPELT) know about model
layouts: where a model keeps its layers and their projections, and the base class of the
methods with a deep prefix. Importable without torch (listing the methods loads this module);
the torch modules the methods attach are in :mod:`peftbench.methods._layers`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from peftbench.plugin.method import Method

ACTIVATIONS = ("relu", "gelu", "gelu_new", "silu", "swish", "tanh")
"""Adapter nonlinearities (names in ``transformers.activations.ACT2FN``)."""

if TYPE_CHECKING:
    import torch
    from torch import nn

    from peftbench.plugin.model import ModelInfo


@dataclass(frozen=True)
class Layout:
    """Module paths inside one transformer layer."""

    attention_output: str
    """The projection after multi-head attention."""
    ffn_output: str
    """The feed-forward block's output projection."""
    self_attention: str | None = None
    """The self-attention module, called with ``past_key_values`` (prefix injection)."""
    ffn_residual: str | None = None
    """BERT-style module called as ``(ffn_hidden, ffn_input)`` that adds the residual."""
    ffn: str | None = None
    """A decoder's feed-forward block, ``ffn(x)`` -> FFN(x) (the residual added outside it)."""
    query_value: tuple[str, ...] = ()
    """The attention projections that compute queries and values (UniPELT's LoRA targets)."""

    @property
    def decoder(self) -> bool:
        """Whether the layer is a causal decoder's (its attention calls a key/value cache)."""
        return self.ffn is not None


BERT_LAYOUT = Layout(
    "attention.output.dense", "output.dense", "attention.self", "output",
    query_value=("query", "value"),
)  # fmt: skip
LLAMA_LAYOUT = Layout(
    "self_attn.o_proj", "mlp.down_proj", "self_attn", ffn="mlp", query_value=("q_proj", "v_proj")
)
LAYOUTS: dict[str, Layout] = {
    "bert": BERT_LAYOUT,
    "roberta": BERT_LAYOUT,
    "xlm-roberta": BERT_LAYOUT,
    "electra": BERT_LAYOUT,
    "gpt2": Layout("attn.c_proj", "mlp.c_proj", "attn", ffn="mlp", query_value=("c_attn",)),
    "llama": LLAMA_LAYOUT,
    "mistral": LLAMA_LAYOUT,
    "qwen2": LLAMA_LAYOUT,
}
ENCODERS = tuple(name for name, layout in LAYOUTS.items() if not layout.decoder)
"""BERT-style encoders."""
PREFIX_ARCHITECTURES = tuple(name for name, layout in LAYOUTS.items() if layout.self_attention)
"""Model types whose layers take a deep prefix and a parallel FFN adapter (MAM, UniPELT):
BERT-style encoders and the GPT-2 and Llama-family decoders."""


def transformer_layers(model: nn.Module, info: ModelInfo) -> nn.ModuleList:
    """The list of the model's transformer layers (the first ``ModuleList`` of that length)."""
    from torch import nn

    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == info.num_layers:
            return module
    raise ValueError(f"{info.name}: no list of {info.num_layers} transformer layers found")


def freeze_all(model: nn.Module) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(False)


PREFIX_KEY = "deep_prefix.vectors"


def with_materialized_prefix(
    model: nn.Module, tensors: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``tensors`` with the prefix's parameters replaced by the vectors they compute."""
    kept = {name: t for name, t in tensors.items() if not name.startswith("deep_prefix.")}
    return {**kept, PREFIX_KEY: model.deep_prefix.materialize()}


def load_materialized_prefix(
    model: nn.Module, tensors: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Load the prefix vectors from ``tensors`` into ``model``; returns the other tensors."""
    model.deep_prefix.load_materialized(tensors[PREFIX_KEY])
    return {name: t for name, t in tensors.items() if name != PREFIX_KEY}


class DeepPrefixMethod(Method):
    """A method with a :class:`DeepPrefix` (MAM, UniPELT): the artifact holds the prefix
    vectors, not the MLP that computes them while training; the added modules stay at
    inference. The prefix goes in through each layer's self-attention module, whose key/value
    cache it wraps: architectures whose attention layout is known (:data:`PREFIX_ARCHITECTURES`).
    """

    def unsupported_reason(self, info):
        if info.model_type not in PREFIX_ARCHITECTURES:
            return (
                f"{self.name} injects its prefix into the key/value cache of self-attention "
                f"modules whose place and call it knows ({', '.join(PREFIX_ARCHITECTURES)}); "
                f"{info.model_type!r} is not one of them"
            )
        return None

    def artifact(self, model, info):
        return with_materialized_prefix(model, super().artifact(model, info))

    def load_artifact(self, model, tensors, info):
        super().load_artifact(model, load_materialized_prefix(model, tensors), info)

    def merge(self, model):
        return None
