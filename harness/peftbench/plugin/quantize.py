"""Quantized bases: the ``int8`` and ``nf4`` values of the precision axis (bitsandbytes).

Every ``Linear`` (and GPT-2 ``Conv1D``) outside the task head becomes a bitsandbytes layer:
LLM.int8() (Dettmers et al., 2022) or 4-bit NormalFloat with double quantization (Dettmers et
al., 2023). Embeddings, norms and the head stay in full precision (so does a language-model head
tied to the embeddings). bitsandbytes runs both on CPU and GPU.

bitsandbytes quantizes a weight when it first moves from the CPU to a device. Quantizing on the
CPU and moving the model afterwards (what ``accelerate.prepare`` does) is wrong on a GPU: with
bitsandbytes 0.48-0.50, ``Module.to`` keeps each ``Int8Params`` object and replaces only its
data, so its ``CB``/``SCB`` scales stay on the CPU (a device error in the first forward); with
0.45-0.47, ``Int8Params.to`` quantizes the int8 codes a second time. Here each layer is built
from its CPU full-precision weight and moved to the run's device on its own: it is quantized
there, once, and the full-precision copy never reaches the device. 0.47 is the first release
whose CPU path does not quantize twice when the model is later moved to the CPU.
"""

from __future__ import annotations

import sys

from torch import nn
from transformers.pytorch_utils import Conv1D

from peftbench.plugin.backends import require
from peftbench.plugin.method import is_head
from peftbench.plugin.model import ModelInfo

BITS = {"int8": 8, "nf4": 4}
"""Precision values that quantize the base, and their bit width."""
INSTALL = "pip install 'bitsandbytes>=0.47,<0.51'"


def bitsandbytes(precision: str):
    """The bitsandbytes module, or :class:`peftbench.plugin.backends.MissingBackendError` naming the
    precision that needs it and the install command."""
    return require("bitsandbytes", f"precision {precision}", INSTALL)


def quantized_layers(model: nn.Module) -> dict[str, int]:
    """Name -> bit width of each bitsandbytes layer of ``model`` (none where bitsandbytes was
    never imported: then no layer can be one of its; this does not import it)."""
    bnb = sys.modules.get("bitsandbytes")
    if bnb is None:
        return {}
    kinds = ((bnb.nn.Linear4bit, 4), (bnb.nn.Linear8bitLt, 8))
    return {
        name: bits
        for name, module in model.named_modules()
        for kind, bits in kinds
        if isinstance(module, kind)
    }


def quantized_bits(model: nn.Module) -> set[int]:
    """The bit widths of ``model``'s bitsandbytes layers (empty: the model is not quantized)."""
    return set(quantized_layers(model).values())


def quantized_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters that bitsandbytes stores quantized."""
    return [f"{name}.weight" for name in quantized_layers(model)]


def _bitsandbytes(bits: int):
    """bitsandbytes, for a valid bit width (:data:`BITS`)."""
    precision = next((p for p, b in BITS.items() if b == bits), None)
    if precision is None:
        raise ValueError(f"bits={bits!r}; valid: {', '.join(map(str, sorted(BITS.values())))}")
    return bitsandbytes(precision)


def quantized_layer(child: nn.Module, bits: int, device: str) -> nn.Module:
    """The bitsandbytes version of ``child`` (a ``Linear`` or GPT-2 ``Conv1D`` whose weights
    are on the CPU or the meta device), quantized on ``device``: 4-bit NF4 with double
    quantization (QLoRA) or LLM.int8() with outlier threshold 6.0. Compute runs in the weight's
    dtype."""
    bnb = _bitsandbytes(bits)
    weight = child.weight.T if isinstance(child, Conv1D) else child.weight
    if weight.device.type not in ("cpu", "meta"):
        raise ValueError(
            f"{type(child).__name__} weight on {weight.device}: bitsandbytes quantizes when a "
            "weight leaves the CPU; pass the layer with its weights on the CPU"
        )
    d_out, d_in = weight.shape
    has_bias = child.bias is not None
    if bits == 4:
        layer = bnb.nn.Linear4bit(
            d_in,
            d_out,
            bias=has_bias,
            compute_dtype=weight.dtype,
            compress_statistics=True,
            quant_type="nf4",
            device="meta",
        )
        layer.weight = bnb.nn.Params4bit(
            weight.detach().contiguous(),
            requires_grad=False,
            compress_statistics=True,
            quant_type="nf4",
        )
        # bitsandbytes would repack the weights, for good, into a CPU inference layout at the
        # first no-grad evaluation; training after that fails.
        layer.support_avx512bf16_for_cpu = False
    else:
        layer = bnb.nn.Linear8bitLt(
            d_in, d_out, bias=has_bias, has_fp16_weights=False, threshold=6.0, device="meta"
        )
        layer.weight = bnb.nn.Int8Params(
            weight.detach().contiguous(), requires_grad=False, has_fp16_weights=False
        )
    if has_bias:
        layer.bias = nn.Parameter(child.bias.detach().clone(), requires_grad=False)
    if weight.device.type == "meta":  # structure only (counting): nothing to quantize
        return layer
    return layer.to(device)  # the move from the CPU quantizes


def quantize_linears(model: nn.Module, info: ModelInfo, bits: int, device: str = "cpu") -> int:
    """Replace every ``Linear`` and GPT-2 ``Conv1D`` outside the task head of ``model`` (on the
    CPU) by its bitsandbytes version quantized on ``device``, one layer at a time; the rest of
    the model stays where it is. A layer whose weight is an embedding table (a language-model
    head tied to the input embeddings) stays as it is: the embeddings stay in full precision,
    and a quantized copy would untie them. Returns the count of layers replaced."""
    bnb = _bitsandbytes(bits)
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    replaced = 0
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            path = f"{parent_name}.{name}" if parent_name else name
            if not isinstance(child, (nn.Linear, Conv1D)) or is_head(path, info):
                continue
            if isinstance(child, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)):
                continue
            if id(child.weight) in tables:
                continue
            setattr(parent, name, quantized_layer(child, bits, device))
            replaced += 1
    return replaced
