"""QLoRA (Dettmers et al., 2023, "QLoRA: Efficient Finetuning of Quantized LLMs",
arXiv:2305.14314): LoRA on a base model quantized to 4-bit NormalFloat with double
quantization, through ``peft`` and ``bitsandbytes``.

A preset of ``lora`` at ``precision=nf4`` (as peft's own benchmarks define it): the precision
axis quantizes the base (every ``Linear`` and GPT-2 ``Conv1D`` outside the head becomes a
bitsandbytes NF4 layer with double-quantized scales, computing in the model's dtype; the
embeddings and the head stay in full precision), and LoRA adapters train on top of every
linear layer, as in the paper. Any other precision is refused: that is ``lora``. Defaults from
the paper (for 7B-13B models): r=64, alpha=16, dropout 0.1, lr 2e-4. Not merged (merging
would requantize the base and change the outputs). Architectures: any with linear (or GPT-2
Conv1D) layers.
"""

from __future__ import annotations

from peftbench import register_method
from peftbench.methods.lora import LoRA, QuantizedLoRA
from peftbench.plugin.method import HParam, learning_rate

LORA = LoRA.hyperparameters


@register_method("qlora")
class QLoRA(QuantizedLoRA):
    description = "QLoRA: LoRA on every linear layer of a 4-bit NF4 double-quantized base (bnb)"
    paper = "Dettmers et al., 2023, QLoRA: Efficient Finetuning of Quantized LLMs, arXiv:2305.14314"
    hyperparameters = {
        "lr": learning_rate(2e-4),
        "r": LORA["r"].with_default(64),
        "alpha": LORA["alpha"],
        "dropout": LORA["dropout"].with_default(0.1),
        "target_modules": LORA["target_modules"].with_default("all-linear"),
        "precision": HParam("nf4", "nf4 only: qlora is LoRA on an nf4 base"),
    }
    lr_range = (1e-4, 2e-4)
