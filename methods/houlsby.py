"""Houlsby adapters (Houlsby et al., 2019, "Parameter-Efficient Transfer Learning for NLP",
arXiv:1902.00751).

Every transformer layer gets two bottleneck adapters h + f(h), f(h) = W_up·σ(W_down·h): one
after the attention output projection and one after the feed-forward output projection, both
before the residual connection and layer norm. The layer norms of every layer are trained too,
as in the paper. The up-projection starts at zero, so each adapter starts as the identity
(the paper's near-identity initialisation). Defaults: bottleneck m=64 (the paper sweeps 8, 64,
256), lr 3e-4 (the paper sweeps 3e-5, 3e-4, 3e-3), swish nonlinearity (AdapterHub's Houlsby
configuration). 2·(2·d·m + m + d) parameters per layer plus its norms. Architectures: BERT
family, GPT-2, Llama family.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from peftbench import register_method
from peftbench.methods._modules import (
    ACTIVATIONS,
    LAYOUTS,
    freeze_all,
    transformer_layers,
)
from peftbench.plugin.method import AT_LEAST_ONE, HParam, Method, learning_rate

if TYPE_CHECKING:
    from torch import nn


def is_norm(module: nn.Module) -> bool:
    from torch import nn

    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("RMSNorm")


@register_method("houlsby")
class Houlsby(Method):
    description = "Houlsby adapters: two bottleneck adapters per layer, layer norms trained"
    paper = "Houlsby et al., 2019, Parameter-Efficient Transfer Learning for NLP, arXiv:1902.00751"
    hyperparameters = {
        "lr": learning_rate(3e-4),
        "bottleneck": HParam(64, "adapter bottleneck width m", AT_LEAST_ONE),
        "activation": HParam(
            "swish",
            "adapter nonlinearity (a transformers activation: relu, gelu, swish)",
            choices=ACTIVATIONS,
        ),
    }
    family = "adapter"
    rank_rule = "no weight matrix updated (modules added in series)"
    lr_range = (3e-5, 3e-3)
    architectures = tuple(LAYOUTS)

    def apply(self, model, hp, info):
        from peftbench.methods._layers import add_serial_adapter

        freeze_all(model)
        layout = LAYOUTS[info.model_type]
        for layer in transformer_layers(model, info):
            for norm in filter(is_norm, layer.modules()):
                norm.requires_grad_(True)
            for path in (layout.attention_output, layout.ffn_output):
                add_serial_adapter(layer.get_submodule(path), hp["bottleneck"], hp["activation"])
        return model

    def merge(self, model):
        return None
