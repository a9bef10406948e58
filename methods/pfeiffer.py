"""Pfeiffer adapters (Pfeiffer et al., 2021, "AdapterFusion: Non-Destructive Task Composition
for Transfer Learning", arXiv:2005.00247): one bottleneck adapter per layer, after the
feed-forward block.

The adapter h + W_up·ReLU(W_down·h) sits after the feed-forward output projection, before the
residual connection and layer norm. AdapterHub's configuration of this adapter additionally
re-applies the layer's own layer norm around it; this simpler placement does not. The
up-projection starts at zero.
Defaults from the paper: reduction factor 16 (bottleneck d/16), lr 1e-4. 2·d·m + m + d
parameters per layer. Architectures: BERT family, GPT-2, Llama family.
"""

from __future__ import annotations

from peftbench import register_method
from peftbench.methods._modules import (
    ACTIVATIONS,
    LAYOUTS,
    freeze_all,
    transformer_layers,
)
from peftbench.plugin.method import AT_LEAST_ONE, HParam, Method, learning_rate


@register_method("pfeiffer")
class Pfeiffer(Method):
    description = "Pfeiffer adapter: one bottleneck adapter per layer, after the feed-forward block"
    paper = "Pfeiffer et al., 2021, AdapterFusion, arXiv:2005.00247"
    hyperparameters = {
        "lr": learning_rate(1e-4),
        "reduction_factor": HParam(
            16, "bottleneck width is the hidden size divided by this", AT_LEAST_ONE
        ),
        "activation": HParam(
            "relu",
            "adapter nonlinearity (a transformers activation: relu, gelu, swish)",
            choices=ACTIVATIONS,
        ),
    }
    family = "adapter"
    rank_rule = "no weight matrix updated (modules added in series)"
    lr_range = (1e-4, 1e-3)
    architectures = tuple(LAYOUTS)

    def apply(self, model, hp, info):
        from peftbench.methods._layers import add_serial_adapter

        freeze_all(model)
        size = max(1, info.hidden_size // hp["reduction_factor"])
        path = LAYOUTS[info.model_type].ffn_output
        for layer in transformer_layers(model, info):
            add_serial_adapter(layer.get_submodule(path), size, hp["activation"])
        return model

    def merge(self, model):
        return None
