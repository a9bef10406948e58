"""Parameter counts under peftbench's one standard (docs/parameters.md).

Minimal first version: base_total and trainable. The full standard (added, stored, changed,
inference_added, update_rank) is issue 3.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from peftbench.method import Method, is_head
from peftbench.model import ModelInfo


def count_static(model: nn.Module, method: Method, info: ModelInfo, base_names: set[str]) -> dict[str, Any]:
    """Counts that need no trained values (work on the meta device).

    ``model`` is the adapted model, ``base_names`` the parameter names of the unadapted task model.
    """
    trainable_head = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and is_head(n, info))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "trainable_method": trainable - trainable_head, "trainable_head": trainable_head}


def count_base(model: nn.Module, info: ModelInfo) -> int:
    """``base_total``: parameters of the pretrained backbone, task head excluded."""
    return sum(p.numel() for n, p in model.named_parameters() if not is_head(n, info))
