"""Freeze: train only the top k transformer layers and what lies above them, a classic
baseline (Lee, Tang & Lin, 2019, "What Would Elsa Do? Freezing Layers During Transformer
Fine-Tuning", arXiv:1911.03090).

The embeddings and the lower layers stay frozen; the top ``k`` layers, everything the model
registers after them (BERT's pooler, GPT-2's and Llama's final norm) and the head are trained.
Default k=1 (the paper recovers most of full fine-tuning's quality from the top quarter of
BERT's layers; on the 2- to 6-layer CPU models one layer is a fair analogue) and lr 1e-4, the
full fine-tuning default. Architectures: any whose layers form one ``ModuleList`` (BERT family,
GPT-2, Llama, ...).
"""

from __future__ import annotations

from peftbench import register_method
from peftbench.methods._modules import transformer_layers
from peftbench.plugin.method import AT_LEAST_ONE, HParam, Method, learning_rate


@register_method("freeze")
class Freeze(Method):
    description = "Freeze: only the top k transformer layers (and what is above them) trained"
    paper = "Lee et al., 2019, What Would Elsa Do? Freezing Layers ..., arXiv:1911.03090"
    hyperparameters = {
        "lr": learning_rate(1e-4),
        "k": HParam(
            1, "number of top transformer layers trained (1 to the model's layers)", AT_LEAST_ONE
        ),
    }
    family = "selective"
    rank_rule = "min(m, n) in the top k layers, 0 below"
    lr_range = (1e-5, 1e-4)
    trains_base_weights = True

    def apply(self, model, hp, info):
        k = hp["k"]
        if not 1 <= k <= info.num_layers:
            raise ValueError(f"freeze: k={k} is not between 1 and {info.num_layers} layers")
        first = transformer_layers(model, info)[info.num_layers - k]
        first_ids = {id(p) for p in first.parameters()}
        trainable = False
        for parameter in model.parameters():  # registration order: embeddings, layers, top
            trainable = trainable or id(parameter) in first_ids
            parameter.requires_grad_(trainable)
        return model
