"""What a sequence classifier reads: the first token's state, or the mean of the token states.

transformers' BERT-family classifiers read the ``[CLS]`` state through ``base_model.pooler``
(dense + tanh). A checkpoint trained as a sentence encoder with mean pooling (sentence-
transformers' ``1_Pooling/config.json``: ``pooling_mode_mean_tokens``) never trained that state
to vary with its input: on all-MiniLM-L6-v2 truncated to 4 layers its spread over inputs is
0.004 against 0.20 at layer 6 (docs/measurement.md, What a classifier reads). :func:`pool_by_mean`
makes the same pooler read the mean of the unpadded token states instead; the pooler's
parameters and their names stay as they are, so counts, fingerprints and artifacts do not
change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

POOLINGS = ("cls", "mean")
"""``cls``: the classifier's input as transformers builds it (a BERT-family model's first
position through its pooler; a decoder's last non-padding token); ``mean``: the mean of the
states of the positions the attention mask keeps."""


def sentence_transformers_pooling(folder: str | Path) -> str | None:
    """The pooling a sentence-transformers model folder declares (``cls`` or ``mean``), or
    ``None`` where the folder has no such declaration (a plain transformers checkpoint)."""
    folder = Path(folder)
    modules = folder / "modules.json"
    if not modules.is_file():
        return None
    for module in json.loads(modules.read_text()):
        if module.get("type", "").endswith("models.Pooling"):
            config = json.loads((folder / module["path"] / "config.json").read_text())
            if config.get("pooling_mode_mean_tokens"):
                return "mean"
            if config.get("pooling_mode_cls_token"):
                return "cls"
            modes = sorted(k for k, v in config.items() if k.startswith("pooling_mode") and v)
            raise ValueError(f"{folder}: pooling {modes} is not one of {', '.join(POOLINGS)}")
    return None


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the positions ``mask`` keeps; a mask longer than the states (prefix tuning
    prepends its virtual positions to it) is aligned on its last positions."""
    if mask is None:
        return hidden.mean(dim=1)
    keep = mask[:, -hidden.shape[1] :].to(hidden.dtype).unsqueeze(-1)
    return (hidden * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)


def _pooler_forward(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """A BERT-family pooler's ``forward`` over the mean instead of the first position: the
    mask is the one the base model's pre-hook kept for this call (and is dropped after)."""
    mask, self._peftbench_mask = getattr(self, "_peftbench_mask", None), None
    return self.activation(self.dense(_masked_mean(hidden_states, mask)))


def _keep_mask(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Forward pre-hook of the base model: hand the call's attention mask to its pooler."""
    mask = kwargs.get("attention_mask")
    if mask is None and len(args) > 1:
        mask = args[1]
    module.pooler._peftbench_mask = mask


def pool_by_mean(model: nn.Module) -> None:
    """Make ``model``'s classifier read the masked mean of the last layer's token states
    through its pretrained pooler (in place). Raises ``ValueError`` for a model whose base has
    no BERT-style ``pooler`` (``dense`` and ``activation``)."""
    import types

    base = model.base_model
    pooler = getattr(base, "pooler", None)
    if pooler is None or not all(hasattr(pooler, a) for a in ("dense", "activation")):
        raise ValueError(
            f"mean pooling needs a BERT-style pooler (dense, activation) on the base model; "
            f"{type(model).__name__} has {type(pooler).__name__}"
        )
    pooler.forward = types.MethodType(_pooler_forward, pooler)
    # The hook and the forward take their module as an argument: a deep copy of the model
    # (merging on a copy) carries its own mask, not the original's.
    base.register_forward_pre_hook(_keep_mask, with_kwargs=True)
