"""P-tuning (Liu et al., 2021, "GPT Understands, Too", arXiv:2103.10385), through ``peft``.

Continuous prompt embeddings, produced by a prompt encoder (a bidirectional LSTM followed by a
two-layer MLP, as in the paper), are prepended to the input embeddings. The encoder is trained
but only its output, p·d numbers, must be stored (that is the artifact). The paper fine-tunes
the whole model on SuperGLUE and freezes it on LAMA; here the model is frozen. Defaults:
p=20 virtual tokens, encoder hidden size 128, lr 1e-3 (our choice; the paper's SuperGLUE
rates are for full fine-tuning). Architectures: encoders, and decoders through their
language-model head (causal-LM tasks); not decoder sequence classifiers (GPT-2, Llama, ...),
which read the last non-padding token and cannot find it in peft's prompted embeddings.
"""

from __future__ import annotations

import math

from peftbench import register_method
from peftbench.methods._peft import PromptMethod, input_prompt_unsupported, task_type


@register_method("p_tuning")
class PTuning(PromptMethod):
    equal_length_batches = True  # peft drops position ids with input-embedding prompts
    description = "P-tuning: prompt embeddings from a trained LSTM+MLP prompt encoder (peft)"
    paper = "Liu et al., 2021, GPT Understands, Too, arXiv:2103.10385"
    defaults = {"lr": 1e-3, "num_virtual_tokens": 20, "encoder_hidden_size": 128, "encoder": "lstm"}
    hparam_help = {
        "num_virtual_tokens": "prompt length p (virtual tokens)",
        "encoder_hidden_size": "hidden size of the prompt encoder",
        "encoder": "prompt encoder: lstm (LSTM then MLP) or mlp",
    }
    hparam_choices = {"encoder": ("lstm", "mlp")}
    hparam_bounds = {"num_virtual_tokens": (1, math.inf), "encoder_hidden_size": (1, math.inf)}
    lr_range = (1e-4, 1e-2)

    def unsupported_reason(self, info):
        return input_prompt_unsupported(info)

    def peft_config(self, hp, info):
        from peft import PromptEncoderConfig

        return PromptEncoderConfig(
            task_type=task_type(info),
            num_virtual_tokens=hp["num_virtual_tokens"],
            encoder_hidden_size=hp["encoder_hidden_size"],
            encoder_reparameterization_type=hp["encoder"].upper(),
        )
