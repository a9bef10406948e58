"""Prompt tuning (Lester, Al-Rfou & Constant, 2021, "The Power of Scale for
Parameter-Efficient Prompt Tuning", arXiv:2104.08691), through ``peft``.

p trainable embeddings are prepended to the input embeddings; nothing inside the model changes.
Defaults: p=20 virtual tokens (the paper studies 1 to 150), initialised from embeddings of
randomly sampled vocabulary tokens (the paper samples common tokens; ``init=random`` for
Gaussian), lr 3e-2 (the paper uses 0.3 with Adafactor; 3e-2 suits AdamW). p·d parameters. A
classifier reading the first position (``cls`` pooling) reads the first virtual token; one
reading the mean (``mean``, the MiniLMs) averages the virtual tokens with the input's.
Architectures: encoders, and decoders through their language-model head (causal-LM tasks); not
decoder sequence classifiers (GPT-2, Llama, ...), which read the last non-padding token and
cannot find it once peft passes embeddings instead of token ids.
"""

from __future__ import annotations

from peftbench import register_method
from peftbench.methods._peft import PromptMethod, input_prompt_unsupported, task_type
from peftbench.plugin.method import AT_LEAST_ONE, HParam, learning_rate

INITS = {"sample_vocab": "SAMPLE_VOCAB", "random": "RANDOM"}


@register_method("prompt_tuning")
class PromptTuning(PromptMethod):
    equal_length_batches = True  # peft drops position ids with input-embedding prompts
    description = "Prompt tuning: trainable soft-prompt embeddings before the input (peft)"
    paper = "Lester et al., 2021, The Power of Scale for ... Prompt Tuning, arXiv:2104.08691"
    hyperparameters = {
        "lr": learning_rate(3e-2),
        "num_virtual_tokens": HParam(20, "soft-prompt length p (virtual tokens)", AT_LEAST_ONE),
        "init": HParam(
            "sample_vocab",
            "initial prompt: sample_vocab (embeddings of random vocabulary tokens) or random",
            choices=tuple(INITS),
        ),
    }
    family = "prompt"
    rank_rule = "no weight matrix updated (input embeddings added)"
    lr_range = (1e-3, 3e-1)

    def unsupported_reason(self, info):
        return input_prompt_unsupported(info)

    def peft_config(self, hp, info):
        from peft import PromptTuningConfig

        return PromptTuningConfig(
            task_type=task_type(info),
            num_virtual_tokens=hp["num_virtual_tokens"],
            prompt_tuning_init=INITS[hp["init"]],
        )
