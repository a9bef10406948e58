"""P-tuning v2 (Liu et al., 2022, "P-Tuning v2: Prompt Tuning Can Be Comparable to
Fine-tuning Universally Across Scales and Tasks", arXiv:2110.07602), through ``peft``.

Deep prompts: l trainable key and value vectors for every layer, trained directly (the paper
finds the reparametrisation MLP unnecessary for most tasks) and read by the model's own
classification head rather than a verbalizer. This is peft's prefix tuning with
``prefix_projection=False``, i.e. ``prefix_tuning`` without its MLP; we register it under its
own name because the papers' defaults differ. Defaults: l=20 (the paper tunes l per task) and lr
5e-3 (the low end of the paper's 5e-3 to 1e-2). 2·L·l·d parameters. On BERT-style encoders the
position ids start after the prefix, as in the paper's code. Architectures: those peft
prefix-tunes.
"""

from __future__ import annotations

from peftbench import register_method
from peftbench.methods._peft import PromptMethod, task_type
from peftbench.plugin.method import AT_LEAST_ONE, HParam, learning_rate


@register_method("p_tuning_v2")
class PTuningV2(PromptMethod):
    description = "P-tuning v2: deep prompts (key/value prefixes) in every layer, no MLP (peft)"
    paper = "Liu et al., 2022, P-Tuning v2, arXiv:2110.07602"
    hyperparameters = {
        "lr": learning_rate(5e-3),
        "num_virtual_tokens": HParam(
            20, "prefix length l (key/value vectors per layer)", AT_LEAST_ONE
        ),
    }
    family = "prompt"
    rank_rule = "no weight matrix updated (attention keys and values added)"
    lr_range = (5e-3, 1e-2)

    def peft_config(self, hp, info):
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(
            task_type=task_type(info),
            num_virtual_tokens=hp["num_virtual_tokens"],
            prefix_projection=False,
        )
