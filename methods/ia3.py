"""(IA)³: Infused Adapter by Inhibiting and Amplifying Inner Activations (Liu et al., 2022,
"Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context Learning",
arXiv:2205.05638), through ``peft``.

Learned vectors rescale the attention keys and values (l_k, l_v: d each) and the feed-forward
intermediate activations (l_ff: d_ff, applied to the input of the FFN output projection); they
start at one. On the BERT family exactly those three are targeted; elsewhere peft's default
for the architecture (GPT-2: the fused query/key/value projection and the FFN output). Default
lr 3e-3 (the paper's, with Adafactor). L·(2·d + d_ff) parameters on BERT. Mergeable.
Architectures: BERT family, and those peft has IA3 defaults for (GPT-2, Llama, T5, ...).
"""

from __future__ import annotations

from peftbench import register_method
from peftbench.methods._modules import ENCODERS
from peftbench.methods._peft import PeftMethod
from peftbench.plugin.method import learning_rate

BERT_TARGETS = r".*\.layer\.\d+\.(attention\.self\.(key|value)|output\.dense)"
BERT_FEEDFORWARD = r".*\.layer\.\d+\.output\.dense"


@register_method("ia3")
class IA3(PeftMethod):
    description = "(IA)³: learned rescaling of keys, values and FFN activations (peft)"
    paper = "Liu et al., 2022, Few-Shot Parameter-Efficient Fine-Tuning ..., arXiv:2205.05638"
    hyperparameters = {"lr": learning_rate(3e-3)}
    family = "scaling"
    rank_rule = "min(m, n): a diagonal rescaling is not low-rank"
    lr_range = (1e-3, 1e-2)

    def peft_config(self, hp, info):
        from peft import IA3Config

        if info.model_type in ENCODERS:
            return IA3Config(target_modules=BERT_TARGETS, feedforward_modules=BERT_FEEDFORWARD)
        return IA3Config()
