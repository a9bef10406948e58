"""Quantizing on the run's device (peftbench/plugin/quantize.py), on the CPU: outputs close to
float32, unchanged by the model move that ``accelerate.prepare`` makes afterwards (no second
quantization), tied heads left tied, and the meta-device build for counting."""

from __future__ import annotations

import pytest
import torch

from peftbench.planning.counting import numel
from peftbench.plugin.registry import MODELS
from peftbench.plugin.task import Head

bnb = pytest.importorskip("bitsandbytes")

from peftbench.plugin.quantize import quantize_linears, quantized_layer  # noqa: E402

TOLERANCE = {8: 0.05, 4: 0.2}
"""Relative error of a quantized layer's output against float32 (LLM.int8(), NF4)."""


def relative_error(found: torch.Tensor, expected: torch.Tensor) -> float:
    return float((found - expected).norm() / expected.norm())


@pytest.mark.parametrize("bits", [8, 4])
def test_a_quantized_layer_matches_float32_and_survives_the_model_move(bits):
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 128)
    inputs = torch.randn(4, 256)
    with torch.no_grad():
        expected = linear(inputs)
        layer = quantized_layer(linear, bits, "cpu")
        before = layer(inputs)
        moved = torch.nn.Sequential(layer).to("cpu")[0]  # what accelerate.prepare does
        after = moved(inputs)
    assert relative_error(before, expected) < TOLERANCE[bits]
    assert torch.equal(after, before)  # quantized once: the move changed nothing
    assert numel(layer.weight) == linear.weight.numel()


def test_quantized_layer_refuses_bad_bits():
    linear = torch.nn.Linear(8, 8)
    with pytest.raises(ValueError, match=r"bits=3; valid: 4, 8"):
        quantized_layer(linear, 3, "cpu")


@pytest.mark.parametrize("bits", [8, 4])
def test_a_decoder_quantized_on_its_device_keeps_its_tied_head(bits):
    loaded = MODELS.get("tiny-llama").load(num_labels=2, head=Head.CAUSAL_LM)
    model = loaded.model
    ids = torch.randint(0, 1000, (2, 12))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    replaced = quantize_linears(model, loaded.info, bits, "cpu")
    assert replaced == 2 * 7  # q, k, v, o, gate, up, down per layer; not the tied head
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    model.to("cpu")
    with torch.no_grad():
        found = model(input_ids=ids).logits
    assert relative_error(found, expected) < TOLERANCE[bits]


def test_the_meta_build_is_structure_only():
    empty = MODELS.get("tiny-gpt2").build_empty(num_labels=2)
    before = sum(p.numel() for p in empty.model.parameters())
    assert quantize_linears(empty.model, empty.info, 4, "cpu") == 2 * 4  # qkv, proj, fc, proj
    assert all(p.is_meta for p in empty.model.parameters())
    assert sum(numel(p) for p in empty.model.parameters()) == before
