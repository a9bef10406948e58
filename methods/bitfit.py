"""BitFit (Ben Zaken, Goldberg & Ravfogel, ACL 2022): train only the bias terms.

Every bias of the backbone is trained (the paper's full variant, not its query/MLP subset);
weights stay frozen. Default lr 5e-3: the paper sweeps 1e-4 to 1e-3 over many epochs, and a
short budget needs higher. Applies to any architecture with bias terms.
"""

from __future__ import annotations

from peftbench import register_method
from peftbench.plugin.method import Method, learning_rate


@register_method("bitfit")
class BitFit(Method):
    description = "BitFit: only the bias terms are trained"
    paper = "Ben Zaken et al., 2022, BitFit, arXiv:2106.10199"
    hyperparameters = {"lr": learning_rate(5e-3)}
    family = "selective"
    rank_rule = "no weight matrix updated (biases only)"
    lr_range = (1e-4, 1e-2)

    def unsupported_reason(self, info):
        return None if info.has_bias else f"{info.name} has no bias terms"

    def apply(self, model, hp, info):
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.endswith(".bias"))
        return model
