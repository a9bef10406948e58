"""Prefix tuning (Li & Liang, 2021, "Prefix-Tuning: Optimizing Continuous Prompts for
Generation", arXiv:2101.00190), through ``peft``.

Every attention layer attends to l trainable key and value vectors in front of the sequence's.
As in the paper the vectors are reparametrised while training: an MLP (d → 512 → 2·L·d, tanh)
computes them from l embeddings. The MLP is trained but only the vectors it computes must be
stored, 2·L·l·d numbers: that is the artifact (peft's saved ``prompt_embeddings``). Defaults:
l=10 and MLP width 512 (the paper's table-to-text setting), lr 5e-4 (the paper uses 5e-5 with
many epochs on GPT-2; a short budget needs more). With ``prefix_projection=false`` this is
P-tuning v2's deep prompt (see ``p_tuning_v2``). On BERT-style encoders peft passes the prefix
as a key/value cache, so position ids start after the prefix (as in P-tuning v2's reference
code). Architectures: those peft prefix-tunes (BERT family, GPT-2, Llama, ...).
"""

from __future__ import annotations

from peftbench import register_method
from peftbench.methods._peft import PromptMethod, task_type
from peftbench.plugin.method import AT_LEAST_ONE, HParam, learning_rate


@register_method("prefix_tuning")
class PrefixTuning(PromptMethod):
    description = "Prefix tuning: trainable key/value prefixes in every layer, MLP-reparametrised"
    paper = "Li & Liang, 2021, Prefix-Tuning, arXiv:2101.00190"
    hyperparameters = {
        "lr": learning_rate(5e-4),
        "num_virtual_tokens": HParam(
            10, "prefix length l (key/value vectors per layer)", AT_LEAST_ONE
        ),
        "prefix_projection": HParam(
            True, "compute the prefix with an MLP while training (false: P-tuning v2)"
        ),
        "encoder_hidden_size": HParam(512, "width of that MLP", AT_LEAST_ONE),
    }
    family = "prompt"
    rank_rule = "no weight matrix updated (attention keys and values added)"
    lr_range = (5e-5, 5e-3)

    def peft_config(self, hp, info):
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(
            task_type=task_type(info),
            num_virtual_tokens=hp["num_virtual_tokens"],
            prefix_projection=hp["prefix_projection"],
            encoder_hidden_size=hp["encoder_hidden_size"],
        )
