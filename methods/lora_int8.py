"""LoRA on an 8-bit base: LoRA (Hu et al., 2022, arXiv:2106.09685) trained on a base model
quantized with LLM.int8() (Dettmers et al., 2022, "LLM.int8(): 8-bit Matrix Multiplication for
Transformers at Scale", arXiv:2208.07339), through ``peft`` and ``bitsandbytes``.

A preset of ``lora`` at ``precision=int8``: the precision axis quantizes the base (every
``Linear`` and GPT-2 ``Conv1D`` outside the head becomes a bitsandbytes ``Linear8bitLt``: int8
weights, outlier threshold 6.0, the paper's; the embeddings and the head stay in full
precision), and LoRA adapters train on the targets. Any other precision is refused: that is
``lora``. Defaults as for ``lora``: r=8, alpha=16, peft's default targets (query and value on
BERT), lr 5e-4. Not merged (merging would requantize the base and change the outputs).
Architectures: those peft has LoRA defaults for, or any with named linear targets.
"""

from __future__ import annotations

from peftbench import register_method
from peftbench.methods.lora import LoRA, QuantizedLoRA
from peftbench.plugin.method import HParam


@register_method("lora_int8")
class LoRAInt8(QuantizedLoRA):
    description = "LoRA on an LLM.int8() 8-bit quantized base (peft, bnb)"
    paper = (
        "Dettmers et al., 2022, LLM.int8(), arXiv:2208.07339; "
        "Hu et al., 2022, LoRA, arXiv:2106.09685"
    )
    hyperparameters = {
        **LoRA.hyperparameters,
        "precision": HParam("int8", "int8 only: lora_int8 is LoRA on an int8 base"),
    }
    lr_range = (1e-4, 1e-3)
