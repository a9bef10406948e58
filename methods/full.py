"""Full fine-tuning: every parameter is trained and stored (the reference point)."""

from __future__ import annotations

from peftbench import register_method
from peftbench.plugin.method import Method


@register_method("full")
class FullFineTuning(Method):
    description = "Full fine-tuning: all parameters trained (reference)"
    paper = "Devlin et al., 2019, BERT, arXiv:1810.04805 (fine-tuning all parameters)"
    defaults = {"lr": 1e-4}
    lr_range = (1e-5, 1e-4)
    trains_base_weights = True

    def apply(self, model, hp, info):
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return model
