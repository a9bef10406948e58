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

from peftbench import register_method
from peftbench.methods._peft import PromptMethod, input_prompt_unsupported, task_type
from peftbench.plugin.method import AT_LEAST_ONE, HParam, learning_rate


@register_method("p_tuning")
class PTuning(PromptMethod):
    equal_length_batches = True  # peft drops position ids with input-embedding prompts
    description = "P-tuning: prompt embeddings from a trained LSTM+MLP prompt encoder (peft)"
    paper = "Liu et al., 2021, GPT Understands, Too, arXiv:2103.10385"
    hyperparameters = {
        "lr": learning_rate(1e-3),
        "num_virtual_tokens": HParam(20, "prompt length p (virtual tokens)", AT_LEAST_ONE),
        "encoder_hidden_size": HParam(128, "hidden size of the prompt encoder", AT_LEAST_ONE),
        "encoder": HParam(
            "lstm", "prompt encoder: lstm (LSTM then MLP) or mlp", choices=("lstm", "mlp")
        ),
    }
    family = "prompt"
    rank_rule = "no weight matrix updated (input embeddings added)"
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
