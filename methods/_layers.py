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
from peftbench.plugin.model import ModelInfo


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
    """UniPELT's gate, sigmoid(w·x + b) (d + 1 parameters): on an encoder averaged over the
    sequence, one value in (0, 1) per example (padding positions count, as in the paper's code);
    on a decoder (``causal``) one value per token, so that no position's gate reads later
    tokens and a cached generation computes the gates a full forward does."""

    def __init__(self, dim: int, causal: bool = False) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 1)
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.proj(x))
        return gate if self.causal else gate.mean(dim=1, keepdim=True)


class SerialAdapter(nn.Module):
    """h + f(h) for a bottleneck f, optionally gated: h + g(h)·f(h)."""

    def __init__(
        self, dim: int, size: int, activation: str, gated: bool = False, causal: bool = False
    ) -> None:
        super().__init__()
        self.bottleneck = Bottleneck(dim, size, activation)
        self.gate = Gate(dim, causal) if gated else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        update = self.bottleneck(h)
        return h + (update if self.gate is None else self.gate(h) * update)


class GatedLowRank(nn.Module):
    """UniPELT's LoRA: g(x)·B·A·x, the gate g taking the place of LoRA's alpha/r scaling.
    A starts as ``nn.Linear`` does, B at zero: r·(d_in + d_out) + d_in + 1 parameters."""

    def __init__(self, d_in: int, d_out: int, rank: int, causal: bool = False) -> None:
        super().__init__()
        self.lora_A = nn.Linear(d_in, rank, bias=False)
        self.lora_B = nn.Linear(rank, d_out, bias=False)
        nn.init.zeros_(self.lora_B.weight)
        self.gate = Gate(d_in, causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(x) * self.lora_B(self.lora_A(x))


class DeepPrefix(nn.Module):
    """l key and l value vectors of width w for every layer (Li & Liang 2021): 2·L·l·w numbers,
    w the width of a layer's keys (the hidden size d, or fewer with grouped-query attention).

    With ``projection`` > 0 they are computed, while training, by an MLP (d → projection → 2·L·w,
    tanh) from l embeddings of width d, the paper's reparametrisation; :meth:`materialize`
    computes the vectors and :meth:`load_materialized` replaces the MLP by them for storage and
    inference.
    """

    def __init__(
        self, layers: int, length: int, dim: int, projection: int = 0, width: int | None = None
    ) -> None:
        super().__init__()
        self.layers, self.length = layers, length
        self.width = dim if width is None else width
        if projection > 0:
            self.embedding = nn.Parameter(torch.randn(length, dim))
            self.down = nn.Linear(dim, projection)
            self.up = nn.Linear(projection, layers * 2 * self.width)
            self.register_parameter("vectors", None)
        else:
            self.vectors = nn.Parameter(torch.randn(layers, 2, length, self.width))

    def forward(self, layer: int) -> torch.Tensor:
        """Layer ``layer``'s keys and values, shape (2, l, w)."""
        if self.vectors is not None:
            return self.vectors[layer]
        rows = slice(layer * 2 * self.width, (layer + 1) * 2 * self.width)
        hidden = torch.tanh(self.down(self.embedding))
        out = F.linear(hidden, self.up.weight[rows], self.up.bias[rows])
        return out.view(self.length, 2, self.width).transpose(0, 1)

    def materialize(self) -> torch.Tensor:
        """All layers' keys and values, shape (L, 2, l, w)."""
        return torch.stack([self(layer) for layer in range(self.layers)]).detach()

    def load_materialized(self, vectors: torch.Tensor) -> None:
        """Use ``vectors`` (from :meth:`materialize`) and drop the reparametrisation."""
        reference = next(self.parameters())
        for name in ("embedding", "down", "up"):
            if hasattr(self, name):
                delattr(self, name)
        self.vectors = nn.Parameter(vectors.to(reference), requires_grad=reference.requires_grad)


class _PrefixCache:
    """Stands in for the key/value cache a self-attention module is called with: it calls only
    ``update``, whose answer (the keys and values to attend to) gets the prefix in front. The
    model's own cache, if any, is updated as before and never holds the prefix, so the positions
    and the cache length the model computes are those of its own tokens."""

    def __init__(self, key: torch.Tensor, value: torch.Tensor, cache: Any = None) -> None:
        self.key, self.value, self.cache = key, value, cache

    def update(self, key: torch.Tensor, value: torch.Tensor, *args: Any, **kwargs: Any):
        if self.cache is not None:
            key, value = self.cache.update(key, value, *args, **kwargs)
        return torch.cat([self.key, key], dim=2), torch.cat([self.value, value], dim=2)


def _extend_mask(mask: torch.Tensor, length: int) -> torch.Tensor:
    """Let every query attend to ``length`` prefix positions in front of the keys (boolean
    masks mark allowed positions with True, additive masks with 0)."""
    fill = torch.ones if mask.dtype == torch.bool else torch.zeros
    pad = fill(*mask.shape[:-1], length, dtype=mask.dtype, device=mask.device)
    return torch.cat([pad, mask], dim=-1)


def _causal_mask(queries: int, past: int, device: torch.device) -> torch.Tensor:
    """The boolean causal mask (1, 1, queries, past + queries) of queries that follow ``past``
    cached positions: what a decoder's attention means by no mask at all."""
    keys = torch.arange(past + queries, device=device)
    return (keys[None, :] <= past + torch.arange(queries, device=device)[:, None])[None, None]


def _gated_mask(mask: torch.Tensor, gate: torch.Tensor, length: int) -> torch.Tensor:
    """An additive mask whose ``length`` prefix columns add log g(x_t) to query t's scores: the
    gate scales the prefix's unnormalised attention weights, token by token."""
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=gate.dtype, device=mask.device).masked_fill(
            ~mask, torch.finfo(gate.dtype).min
        )
    batch, queries = gate.shape[:2]
    mask = mask.to(gate.dtype).expand(batch, -1, queries, -1)
    prefix = torch.log(gate).view(batch, 1, queries, 1).expand(-1, mask.shape[1], -1, length)
    return torch.cat([prefix, mask], dim=-1)


def _inject_prefix(
    prefix: DeepPrefix,
    layer: int,
    heads: int,
    decoder: bool,
    attention: nn.Module,
    args: tuple,
    kwargs: dict[str, Any],
):
    hidden = args[0] if args else kwargs["hidden_states"]
    cache = kwargs.get("past_key_values")
    if cache is not None and not decoder:
        raise RuntimeError("prefix injection into an encoder takes no key/value cache")
    batch, size = hidden.shape[0], prefix.width // heads
    kv = prefix(layer).to(hidden.dtype).view(2, 1, prefix.length, heads, size).transpose(2, 3)
    kv = kv.expand(2, batch, heads, prefix.length, size)
    gate = getattr(attention, "prefix_gate", None)
    mask = kwargs.get("attention_mask")
    if decoder:
        if mask is None:  # causal attention without padding: the mask is implicit
            past = 0 if cache is None else cache.get_seq_length(attention.layer_idx)
            mask = _causal_mask(hidden.shape[1], past, hidden.device)
        if not isinstance(mask, torch.Tensor):
            raise TypeError(
                f"prefix injection needs a tensor attention mask, got {type(mask).__name__} "
                "(use attn_implementation eager or sdpa)"
            )
        if gate is not None:
            kwargs["attention_mask"] = _gated_mask(mask, gate(hidden), prefix.length)
        else:
            kwargs["attention_mask"] = _extend_mask(mask, prefix.length)
    else:
        if gate is not None:
            kv = kv * gate(hidden).view(1, batch, 1, 1, 1)
        if mask is not None:
            kwargs["attention_mask"] = _extend_mask(mask, prefix.length)
    kwargs["past_key_values"] = _PrefixCache(kv[0], kv[1], cache)
    return args, kwargs


def _serial_hook(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
    return module.adapter(output)


def _parallel_hook(module: nn.Module, args):
    hidden, residual = args
    return hidden, residual + module.parallel_adapter(residual)


def _decoder_parallel_hook(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
    return output + module.parallel_adapter(args[0])


def _low_rank_hook(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
    return output + module.gated_lora(args[0])


def add_serial_adapter(
    projection: nn.Module, size: int, activation: str, gated: bool = False, causal: bool = False
) -> SerialAdapter:
    """Insert an adapter after ``projection``'s output (Houlsby, Pfeiffer, UniPELT; ``causal``:
    per-token gate, for decoders)."""
    width = out_features(projection)
    projection.adapter = _placed_like(
        SerialAdapter(width, size, activation, gated, causal), projection
    )
    projection.register_forward_hook(_serial_hook)
    return projection.adapter


def add_parallel_adapter(
    ffn: nn.Module, dim: int, size: int, scale: float, decoder: bool = False
) -> Bottleneck:
    """He et al.'s scaled parallel adapter, FFN(x) + s·f(x). On a BERT-style FFN,
    ``ffn(hidden, x)`` computes LayerNorm(FFN(x) + x), and s·f(x) is added to the residual x:
    LayerNorm(FFN(x) + s·f(x) + x). On a decoder's (``decoder``), ``ffn(x)`` computes FFN(x)
    from the normed input x and s·f(x) is added to its output."""
    ffn.parallel_adapter = _placed_like(Bottleneck(dim, size, "relu", scale), ffn)
    if decoder:
        ffn.register_forward_hook(_decoder_parallel_hook)
    else:
        ffn.register_forward_pre_hook(_parallel_hook)
    return ffn.parallel_adapter


def add_gated_low_rank(linear: nn.Module, rank: int, causal: bool = False) -> GatedLowRank:
    """Add UniPELT's gated LoRA update to the output of ``linear`` (a ``Linear`` or GPT-2
    ``Conv1D``; ``causal``: per-token gate, for decoders)."""
    d_in = linear.weight.shape[0] if isinstance(linear, Conv1D) else linear.in_features
    linear.gated_lora = _placed_like(GatedLowRank(d_in, out_features(linear), rank, causal), linear)
    linear.register_forward_hook(_low_rank_hook)
    return linear.gated_lora


def add_deep_prefix(
    model: nn.Module, info: ModelInfo, length: int, projection: int, gated: bool = False
) -> DeepPrefix:
    """Prepend a trainable prefix to the keys and values of every self-attention layer
    (registered as ``model.deep_prefix``; UniPELT gates it per layer). The prefix's keys are
    used as they are: a decoder's rotary position embedding is not applied to them, and the
    position ids of the model's own tokens are unchanged (they start at 0)."""
    layout = LAYOUTS[info.model_type]
    config = model.config
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    reference = next(model.parameters())
    with torch.device(reference.device):  # built in place: the meta device for counting
        prefix = DeepPrefix(info.num_layers, length, info.hidden_size, projection, heads * head_dim)
    model.deep_prefix = prefix.to(reference.dtype)
    for index, layer in enumerate(transformer_layers(model, info)):
        attention = layer.get_submodule(layout.self_attention)
        if gated:
            attention.prefix_gate = _placed_like(Gate(info.hidden_size, layout.decoder), attention)
        hook = partial(_inject_prefix, model.deep_prefix, index, heads, layout.decoder)
        attention.register_forward_pre_hook(hook, with_kwargs=True)
    return model.deep_prefix
