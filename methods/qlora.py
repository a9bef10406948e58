"""QLoRA (Dettmers et al., 2023, "QLoRA: Efficient Finetuning of Quantized LLMs",
arXiv:2305.14314): LoRA on a base model quantized to 4-bit NormalFloat with double
quantization, through ``peft`` and ``bitsandbytes``.

Every ``Linear`` (and GPT-2 ``Conv1D``) outside the head is replaced by a bitsandbytes NF4
layer with double-quantized scales (``quant_type=nf4, compress_statistics=True``), computing
in the model's dtype; LoRA adapters train on top of all of them, as in the paper. The
embeddings and the head stay in full precision. bitsandbytes runs these layers on CPU and GPU.
Defaults from the paper (for 7B-13B models): r=64, alpha=16, dropout 0.1, lr 2e-4.
Not merged (merging would requantize the base and change the outputs). Architectures: any with
linear (or GPT-2 Conv1D) layers.
"""

from __future__ import annotations

from peftbench import register_method
from peftbench.methods.lora import QuantizedLoRA


@register_method("qlora")
class QLoRA(QuantizedLoRA):
    description = "QLoRA: LoRA on every linear layer of a 4-bit NF4 double-quantized base (bnb)"
    paper = "Dettmers et al., 2023, QLoRA: Efficient Finetuning of Quantized LLMs, arXiv:2305.14314"
    defaults = {"lr": 2e-4, "r": 64, "alpha": 16, "dropout": 0.1, "target_modules": "all-linear"}
    bits = 4
    lr_range = (1e-4, 2e-4)
