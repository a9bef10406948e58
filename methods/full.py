"""Full fine-tuning: every parameter is trained and stored (the reference point)."""

from __future__ import annotations

from peftbench import register_method
from peftbench.plugin.method import Method, learning_rate


@register_method("full")
class FullFineTuning(Method):
    description = "Full fine-tuning: all parameters trained (reference)"
    paper = "Devlin et al., 2019, BERT, arXiv:1810.04805 (fine-tuning all parameters)"
    hyperparameters = {"lr": learning_rate(1e-4)}
    family = "full"
    rank_rule = "min(m, n): every weight trained"
    lr_range = (1e-5, 1e-4)
    trains_base_weights = True

    def apply(self, model, hp, info):
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return model
