"""LayerNorm tuning (Zhao et al., 2024, "Tuning LayerNorm in Attention", arXiv:2312.11420):
train only the gain and bias of every LayerNorm, plus the task head.

An example of a third-party peftbench plugin: nothing in peftbench names this package; the
entry point in its pyproject.toml makes ``layernorm`` a method like any built-in one.
"""

from torch import nn

from peftbench import register_method
from peftbench.plugin.method import Method, learning_rate


@register_method("layernorm")
class LayerNormTuning(Method):
    description = "LayerNorm tuning: only LayerNorm gains and biases are trained (example plugin)"
    paper = "Zhao et al., 2024, Tuning LayerNorm in Attention, arXiv:2312.11420"
    hyperparameters = {"lr": learning_rate(5e-3)}  # one declaration per hyperparameter
    family = "selective"
    lr_range = (1e-3, 1e-2)

    def apply(self, model, hp, info):
        model.requires_grad_(False)
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.requires_grad_(True)
        return model
