"""LoRA: Low-Rank Adaptation (Hu et al., ICLR 2022), through ``peft``.

A frozen weight W gets a trainable update B·A with A: r×d_in, B: d_out×r (B starts at zero),
scaled by alpha/r. Paper defaults: r=8, alpha=16 (the paper's GLUE runs), the attention query
and value projections (``target_modules=auto``: peft's per-architecture names, e.g. query/value
for BERT, c_attn for GPT-2, q_proj/v_proj for Llama, q/v for T5), no bias; lr 5e-4 (paper: 4e-4
to 5e-4 for RoBERTa-base). Mergeable: after merging it adds no inference-time parameters
(on an int8/nf4 base, where merging would requantize, it is not merged).

Variants, as options (peft's): DoRA (``use_dora``: a trained magnitude per output, d_out more
parameters per matrix, Liu et al., 2024), rsLoRA (``use_rslora``: scaling alpha/√r,
Kalajdzievski, 2023), the initialisations ``init_lora_weights`` (``gaussian``; ``pissa``,
``pissa_niter_<n>`` and ``olora`` move the principal part B₀·A₀ out of W, so the base weights
change when the method is applied; ``orthogonal``) and the optimizers peft ships for LoRA
(``optimizer``: ``loraplus``, ``lorafa``). EVA, CorDA and LoRA-GA need a pass over data before
training and LoftQ a CUDA device: refused at plan time with the reason.
"""

from __future__ import annotations

import math

from peftbench import register_method
from peftbench.methods._peft import (
    LORA_INITS,
    LORA_OPTIMIZERS,
    PeftMethod,
    lora_init,
    rank_rule,
    target_modules,
    target_modules_param,
)
from peftbench.plugin.method import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    UNIT,
    HParam,
    learning_rate,
)


@register_method("lora")
class LoRA(PeftMethod):
    description = "LoRA: Low-Rank Adaptation, trainable update B·A on attention projections (peft)"
    paper = "Hu et al., 2022, LoRA: Low-Rank Adaptation of Large Language Models, arXiv:2106.09685"
    hyperparameters = {
        "lr": learning_rate(5e-4),
        "r": HParam(8, "rank of the update B·A", AT_LEAST_ONE),
        "alpha": HParam(16, "scaling numerator: the update is multiplied by alpha/r", NON_NEGATIVE),
        "dropout": HParam(0.0, "dropout on the input of the update", UNIT),
        "target_modules": target_modules_param("auto"),
        "use_dora": HParam(False, "DoRA: a trained magnitude per output rescales W + B·A"),
        "use_rslora": HParam(False, "rsLoRA: scale the update by alpha/sqrt(r), not alpha/r"),
        "init_lora_weights": HParam(
            "default", f"initialisation of A and B (peft's): {', '.join(LORA_INITS)}"
        ),
        "optimizer": HParam(
            "adamw", "; ".join(f"{key}: {text}" for key, text in LORA_OPTIMIZERS.items())
        ),
        "loraplus_lr_ratio": HParam(16.0, "LoRA+: B's learning rate over A's", (1, math.inf)),
    }
    family = "low-rank"
    peft_type = "LORA"
    rank_rule = rank_rule(peft_type)
    lr_range = (1e-4, 1e-3)

    def peft_config(self, hp, info):
        from peft import LoraConfig

        return LoraConfig(
            r=hp["r"],
            lora_alpha=hp["alpha"],
            lora_dropout=hp["dropout"],
            target_modules=target_modules(hp["target_modules"]),
            exclude_modules=list(info.head_prefixes),  # the head is the harness's
            bias="none",
            use_dora=hp.get("use_dora", False),  # presets (qlora, lora_int8) may not list them
            use_rslora=hp.get("use_rslora", False),
            init_lora_weights=lora_init(hp.get("init_lora_weights", "default")),
        )


class QuantizedLoRA(LoRA):
    """LoRA preset on a quantized base: its ``precision`` default (QLoRA: nf4, LoRA-int8:
    int8) quantizes the base like any run at that precision. Any other
    precision is refused (that is ``lora``)."""

    def check_hparams(self, hp):
        precision = self.defaults["precision"]
        problems = super().check_hparams(hp)
        if hp["precision"] != precision:
            problems.append(
                f"precision={hp['precision']!r}: {self.name} is LoRA on an {precision} base; "
                f"valid: {precision} (at {hp['precision']}, use lora)"
            )
        return problems
