"""LoRA: Low-Rank Adaptation (Hu et al., ICLR 2022), through ``peft``.

A frozen weight W gets a trainable update B·A with A: r×d_in, B: d_out×r (B starts at zero),
scaled by alpha/r. Paper defaults: r=8, alpha=16 (the paper's GLUE runs), query and value
projections, no bias; lr 5e-4 (paper: 4e-4 to 5e-4 for RoBERTa-base). Architectures: any whose
attention projections ``peft`` knows (BERT, RoBERTa, GPT-2, Llama, T5, ...).
"""

from __future__ import annotations

from peftbench import register_method
from peftbench.method import Method, is_head


@register_method("lora")
class LoRA(Method):
    description = "LoRA: trainable low-rank update B·A on the attention projections (peft)"
    paper = "Hu et al., 2022, LoRA: Low-Rank Adaptation of Large Language Models, arXiv:2106.09685"
    defaults = {"lr": 5e-4, "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "query,value"}
    lr_range = (1e-4, 1e-3)

    def apply(self, model, hp, info):
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=hp["r"],
            lora_alpha=hp["alpha"],
            lora_dropout=hp["dropout"],
            target_modules=[m.strip() for m in hp["target_modules"].split(",")],
            modules_to_save=list(info.head_prefixes),
            bias="none",
        )
        return get_peft_model(model, config)

    def artifact(self, model, info):
        from peft import get_peft_model_state_dict

        return {k: v for k, v in get_peft_model_state_dict(model).items() if not is_head(k, info)}

    def merge(self, model):
        return model.merge_and_unload()
