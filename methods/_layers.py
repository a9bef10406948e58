"""The torch modules that peftbench's own methods attach to a pretrained model (adapters,
gates, low-rank updates, deep prefixes) and the functions that attach them.

An attached module becomes a child of the module it modifies and acts through a forward hook,
so the pretrained parameters keep their names and values. Imported by the methods' ``apply``
only, so that listing the methods needs no torch.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.pytorch_utils import Conv1D

from peftbench.methods._modules import LAYOUTS, transformer_layers
from peftbench.model import ModelInfo


def out_features(module: nn.Module) -> int:
    """Output width of a ``Linear`` or GPT-2 ``Conv1D``."""
    return module.nf if isinstance(module, Conv1D) else module.out_features


def _placed_like(module: nn.Module, reference: nn.Module) -> nn.Module:
    weight = next(reference.parameters())
    return module.to(device=weight.device, dtype=weight.dtype)


class Bottleneck(nn.Module):
    """Down-projection, nonlinearity, up-projection, times a fixed ``scale``: 2·d·m + m + d
    parameters. The up-projection starts at zero, so the module starts as the zero function."""

    def __init__(self, dim: int, size: int, activation: str, scale: float = 1.0) -> None:
        super().__init__()
        self.down = nn.Linear(dim, size)
        self.act = ACT2FN[activation]
        self.up = nn.Linear(size, dim)
        self.scale = scale
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up(self.act(self.down(x)))


class Gate(nn.Module):
    """UniPELT's gate: sigmoid(w·x + b) averaged over the sequence, one value in (0, 1) per
    example (d + 1 parameters; padding positions count, as in the paper's code)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.proj(x)).mean(dim=1, keepdim=True)


class SerialAdapter(nn.Module):
    """h + f(h) for a bottleneck f, optionally gated: h + g(h)·f(h)."""

    def __init__(self, dim: int, size: int, activation: str, gated: bool = False) -> None:
        super().__init__()
        self.bottleneck = Bottleneck(dim, size, activation)
        self.gate = Gate(dim) if gated else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        update = self.bottleneck(h)
        return h + (update if self.gate is None else self.gate(h) * update)


class GatedLowRank(nn.Module):
    """UniPELT's LoRA: g(x)·B·A·x, the gate g taking the place of LoRA's alpha/r scaling.
    A starts as ``nn.Linear`` does, B at zero: r·(d_in + d_out) + d_in + 1 parameters."""

    def __init__(self, d_in: int, d_out: int, rank: int) -> None:
        super().__init__()
        self.lora_A = nn.Linear(d_in, rank, bias=False)
        self.lora_B = nn.Linear(rank, d_out, bias=False)
        nn.init.zeros_(self.lora_B.weight)
        self.gate = Gate(d_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(x) * self.lora_B(self.lora_A(x))


class DeepPrefix(nn.Module):
    """l key and l value vectors for every layer (Li & Liang 2021): 2·L·l·d numbers.

    With ``projection`` > 0 they are computed, while training, by an MLP (d → projection → 2·L·d,
    tanh) from l embeddings, the paper's reparametrisation; :meth:`materialize` computes the
    vectors and :meth:`load_materialized` replaces the MLP by them for storage and inference.
    """

    def __init__(self, layers: int, length: int, dim: int, projection: int = 0) -> None:
        super().__init__()
        self.layers, self.length, self.dim = layers, length, dim
        if projection > 0:
            self.embedding = nn.Parameter(torch.randn(length, dim))
            self.down = nn.Linear(dim, projection)
            self.up = nn.Linear(projection, layers * 2 * dim)
            self.register_parameter("vectors", None)
        else:
            self.vectors = nn.Parameter(torch.randn(layers, 2, length, dim))

    def forward(self, layer: int) -> torch.Tensor:
        """Layer ``layer``'s keys and values, shape (2, l, d)."""
        if self.vectors is not None:
            return self.vectors[layer]
        rows = slice(layer * 2 * self.dim, (layer + 1) * 2 * self.dim)
        hidden = torch.tanh(self.down(self.embedding))
        out = F.linear(hidden, self.up.weight[rows], self.up.bias[rows])
        return out.view(self.length, 2, self.dim).transpose(0, 1)

    def materialize(self) -> torch.Tensor:
        """All layers' keys and values, shape (L, 2, l, d)."""
        return torch.stack([self(layer) for layer in range(self.layers)]).detach()

    def load_materialized(self, vectors: torch.Tensor) -> None:
        """Use ``vectors`` (from :meth:`materialize`) and drop the reparametrisation."""
        reference = next(self.parameters())
        for name in ("embedding", "down", "up"):
            if hasattr(self, name):
                delattr(self, name)
        self.vectors = nn.Parameter(vectors.to(reference), requires_grad=reference.requires_grad)


class _PrefixCache:
    """Stands in for a transformers cache in BERT-style self-attention, which calls only
    ``update``: the prefix goes in front of the layer's keys and values."""

    def __init__(self, key: torch.Tensor, value: torch.Tensor) -> None:
        self.key, self.value = key, value

    def update(self, key: torch.Tensor, value: torch.Tensor, *args: Any, **kwargs: Any):
        return torch.cat([self.key, key], dim=2), torch.cat([self.value, value], dim=2)


def _extend_mask(mask: torch.Tensor, length: int) -> torch.Tensor:
    """Let every query attend to ``length`` prefix positions in front of the keys (boolean
    masks mark allowed positions with True, additive masks with 0)."""
    fill = torch.ones if mask.dtype == torch.bool else torch.zeros
    pad = fill(*mask.shape[:-1], length, dtype=mask.dtype, device=mask.device)
    return torch.cat([pad, mask], dim=-1)


def _inject_prefix(prefix: DeepPrefix, layer: int, attention: nn.Module, args, kwargs):
    hidden = args[0] if args else kwargs["hidden_states"]
    if kwargs.get("past_key_values") is not None:
        raise RuntimeError("prefix injection supports encoders only (no key/value cache)")
    batch, heads = hidden.shape[0], attention.num_attention_heads
    size = attention.attention_head_size
    kv = prefix(layer).to(hidden.dtype).view(2, 1, prefix.length, heads, size).transpose(2, 3)
    kv = kv.expand(2, batch, heads, prefix.length, size)
    gate = getattr(attention, "prefix_gate", None)
    if gate is not None:
        kv = kv * gate(hidden).view(1, batch, 1, 1, 1)
    kwargs["past_key_values"] = _PrefixCache(kv[0], kv[1])
    if kwargs.get("attention_mask") is not None:
        kwargs["attention_mask"] = _extend_mask(kwargs["attention_mask"], prefix.length)
    return args, kwargs


def _serial_hook(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
    return module.adapter(output)


def _parallel_hook(module: nn.Module, args):
    hidden, residual = args
    return hidden, residual + module.parallel_adapter(residual)


def _low_rank_hook(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
    return output + module.gated_lora(args[0])


def add_serial_adapter(
    projection: nn.Module, size: int, activation: str, gated: bool = False
) -> SerialAdapter:
    """Insert an adapter after ``projection``'s output (Houlsby, Pfeiffer, UniPELT)."""
    width = out_features(projection)
    projection.adapter = _placed_like(SerialAdapter(width, size, activation, gated), projection)
    projection.register_forward_hook(_serial_hook)
    return projection.adapter


def add_parallel_adapter(ffn: nn.Module, dim: int, size: int, scale: float) -> Bottleneck:
    """He et al.'s scaled parallel adapter on a BERT-style FFN: ``ffn(hidden, x)`` computes
    LayerNorm(FFN(x) + x); adding s·f(x) to the residual x gives LayerNorm(FFN(x) + s·f(x) + x)."""
    ffn.parallel_adapter = _placed_like(Bottleneck(dim, size, "relu", scale), ffn)
    ffn.register_forward_pre_hook(_parallel_hook)
    return ffn.parallel_adapter


def add_gated_low_rank(linear: nn.Linear, rank: int) -> GatedLowRank:
    """Add UniPELT's gated LoRA update to ``linear``'s output."""
    linear.gated_lora = _placed_like(
        GatedLowRank(linear.in_features, linear.out_features, rank), linear
    )
    linear.register_forward_hook(_low_rank_hook)
    return linear.gated_lora


def add_deep_prefix(
    model: nn.Module, info: ModelInfo, length: int, projection: int, gated: bool = False
) -> DeepPrefix:
    """Prepend a trainable prefix to the keys and values of every self-attention layer of a
    BERT-style encoder (registered as ``model.deep_prefix``; UniPELT gates it per layer)."""
    layout = LAYOUTS[info.model_type]
    model.deep_prefix = _placed_like(
        DeepPrefix(info.num_layers, length, info.hidden_size, projection), model
    )
    for index, layer in enumerate(transformer_layers(model, info)):
        attention = layer.get_submodule(layout.self_attention)
        if gated:
            attention.prefix_gate = _placed_like(Gate(info.hidden_size), attention)
        attention.register_forward_pre_hook(
            partial(_inject_prefix, model.deep_prefix, index), with_kwargs=True
        )
    return model.deep_prefix
