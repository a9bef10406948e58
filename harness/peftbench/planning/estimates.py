"""Estimates from a model's structure, without running it: the analytic memory of its training
state and the matrix-product FLOPs per trained token (definitions: docs/measurement.md). The
planner sizes cluster jobs with them; a run records them beside its measurements."""

from __future__ import annotations

from typing import Any

from peftbench.planning.counting import nbytes, numel


def expected_memory(model: Any, hp: dict[str, Any]) -> dict[str, int | str]:
    """Analytic memory of training state from the parameter tensors (activations excluded):
    weights and buffers as stored (quantized ones with their quantization state), one gradient
    per trainable element, and AdamW's two moment tensors per trainable element, each in its
    parameter's dtype."""
    weights = sum(nbytes(p) for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return {
        "weights_bytes": weights + buffers,
        "gradients_bytes": trainable,
        "optimizer_state_bytes": 2 * trainable,
        "total_bytes": weights + buffers + 3 * trainable,
        "excludes": "activations, allocator caches, framework overhead",
    }


def matmul_params(model: Any) -> int:
    """Parameters that take part in matrix products, in logical elements (a 4-bit weight counts
    the elements it represents). Embedding tables are lookups and do not count, except where a
    language-model head shares one (tied embeddings): that head multiplies hidden × vocabulary
    per token with it."""
    import torch

    used: dict[int, torch.Tensor] = {}
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            continue
        for parameter in module.parameters(recurse=False):
            used[id(parameter)] = parameter
    return sum(numel(p) for p in used.values())


def training_flops_per_token(matmul_params: int, trainable_params: int) -> int:
    """Model FLOPs per trained token: 2N forward, 2N for the input gradients, and 2 per trainable
    element for the weight gradients (attention-score FLOPs ignored)."""
    return 4 * matmul_params + 2 * trainable_params
