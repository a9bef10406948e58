"""UniPELT (Mao et al., 2022, "UniPELT: A Unified Framework for Parameter-Efficient Language
Model Tuning", arXiv:2110.07577): LoRA, prefix tuning and an adapter in every layer, each
scaled by a learned gate, so the model learns which to use per layer and per example.

A gate is sigmoid(w·x + b) averaged over the sequence (d + 1 parameters), computed from the
submodule's input as in the paper's code:
* gated LoRA on the query and value projections: g·B·A·x (the gate replaces alpha/r);
* gated prefix: l key and value vectors per layer, computed while training by an MLP
  (d → ``prefix_hidden`` → 2·L·d) and scaled by the layer's gate; the artifact stores the
  2·L·l·d vectors. Our own injection: the position ids are unchanged;
* gated adapter after the feed-forward block (Pfeiffer placement): h + g·W_up·ReLU(W_down·h).

Defaults from the paper: prefix length 10, LoRA rank 8, adapter reduction factor 16; MLP width
512 (Li & Liang's) and lr 5e-4 are our choices. Architectures: BERT family (bert, roberta,
xlm-roberta, electra).
"""

from __future__ import annotations

import math

from peftbench import register_method
from peftbench.methods._modules import (
    LAYOUTS,
    DeepPrefixMethod,
    freeze_all,
    transformer_layers,
)


@register_method("unipelt")
class UniPELT(DeepPrefixMethod):
    description = "UniPELT: gated LoRA + gated prefix + gated adapter in every layer"
    paper = "Mao et al., 2022, UniPELT, arXiv:2110.07577"
    defaults = {
        "lr": 5e-4,
        "prefix_length": 10,
        "prefix_hidden": 512,
        "lora_r": 8,
        "lora_targets": "query,value",
        "reduction_factor": 16,
    }
    hparam_help = {
        "prefix_length": "prefix vectors l per layer",
        "prefix_hidden": "width of the MLP that computes the prefix while training",
        "lora_r": "rank of the gated LoRA update",
        "lora_targets": "comma-separated attention submodules that get the gated LoRA update",
        "reduction_factor": "the gated adapter's width is the hidden size divided by this",
    }
    hparam_bounds = {
        "prefix_length": (1, math.inf),
        "prefix_hidden": (1, math.inf),
        "lora_r": (1, math.inf),
        "reduction_factor": (1, math.inf),
    }
    lr_range = (1e-4, 1e-3)

    def apply(self, model, hp, info):
        from peftbench.methods._layers import (
            add_deep_prefix,
            add_gated_low_rank,
            add_serial_adapter,
        )

        freeze_all(model)
        layout = LAYOUTS[info.model_type]
        add_deep_prefix(model, info, hp["prefix_length"], hp["prefix_hidden"], gated=True)
        size = max(1, info.hidden_size // hp["reduction_factor"])
        for layer in transformer_layers(model, info):
            attention = layer.get_submodule(layout.self_attention)
            for name in hp["lora_targets"].split(","):
                add_gated_low_rank(attention.get_submodule(name.strip()), hp["lora_r"])
            add_serial_adapter(layer.get_submodule(layout.ffn_output), size, "relu", gated=True)
        return model
