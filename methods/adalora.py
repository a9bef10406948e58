"""AdaLoRA (Zhang et al., 2023, "Adaptive Budget Allocation for Parameter-Efficient
Fine-Tuning", arXiv:2303.10512), through ``peft``.

LoRA in SVD form, P·Λ·Q, whose rank budget is reallocated while training: after a warm-up of
``tinit`` steps the total budget falls (cubically) from ``init_r`` to ``target_r`` per matrix
on average, by masking the singular values with the lowest importance every ``delta_t`` steps;
the last ``tfinal`` steps train the final allocation. ``tinit`` and ``tfinal`` are fractions
of the run's ``steps`` (the paper sets them in steps per task). peft adds the paper's
orthogonality regulariser on P and Q to the loss whenever the model computes a loss (only
through its sequence-classification model, which trains a copy of the head).
:meth:`on_step` must run after every optimizer step, before the gradients are zeroed (the
importance scores read them). Defaults from the paper: all weight matrices of the backbone
(``all-linear``: BERT's pooler included, the head excluded), init_r=12, target_r=8,
β1=β2=0.85, regulariser weight 0.1, lr 1e-3. The artifact keeps only the surviving triplets
(rows of P, values, columns of Q), so its size is the allocated budget. Mergeable.
Architectures: any with linear (or GPT-2 Conv1D) layers.
"""

from __future__ import annotations

import math

from peftbench import register_method
from peftbench.methods._peft import TARGET_MODULES_HELP, PeftMethod, target_modules, task_type


@register_method("adalora")
class AdaLoRA(PeftMethod):
    description = "AdaLoRA: SVD-form LoRA whose rank budget is reallocated by importance (peft)"
    paper = "Zhang et al., 2023, Adaptive Budget Allocation for PEFT (AdaLoRA), arXiv:2303.10512"
    defaults = {
        "lr": 1e-3,
        "target_modules": "all-linear",
        "init_r": 12,
        "target_r": 8,
        "alpha": 32,
        "tinit": 0.1,
        "tfinal": 0.3,
        "delta_t": 10,
        "beta": 0.85,
        "orth_reg_weight": 0.1,
    }
    hparam_help = {
        "target_modules": TARGET_MODULES_HELP,
        "init_r": "rank of every adapted matrix at the start",
        "target_r": "average rank per matrix once the budget has fallen",
        "alpha": "scaling numerator: the update is multiplied by alpha/r",
        "tinit": "fraction of the steps trained before the budget starts to fall",
        "tfinal": "fraction of the steps, at the end, that train the final allocation",
        "delta_t": "optimizer steps between two reallocations of the budget",
        "beta": "smoothing of the importance scores (peft's beta1 and beta2)",
        "orth_reg_weight": "weight of the orthogonality regulariser on P and Q",
    }
    hparam_bounds = {
        "init_r": (1, math.inf),
        "target_r": (1, math.inf),
        "alpha": (0, math.inf),
        "tinit": (0, 1),
        "tfinal": (0, 1),
        "delta_t": (1, math.inf),
        "beta": (0, 1),
        "orth_reg_weight": (0, math.inf),
    }
    lr_range = (5e-4, 1.2e-3)

    def peft_config(self, hp, info):
        from peft import AdaLoraConfig

        steps = hp["steps"]
        return AdaLoraConfig(
            task_type=task_type(info),  # peft adds the regulariser only through this model class
            target_modules=target_modules(hp["target_modules"]),
            exclude_modules=list(info.head_prefixes),
            init_r=hp["init_r"],
            target_r=hp["target_r"],
            lora_alpha=hp["alpha"],
            total_step=steps,
            tinit=int(hp["tinit"] * steps),
            tfinal=int(hp["tfinal"] * steps),
            deltaT=hp["delta_t"],
            beta1=hp["beta"],
            beta2=hp["beta"],
            orth_reg_weight=hp["orth_reg_weight"],
        )

    def on_step(self, model, step):
        model.base_model.update_and_allocate(step)

    def artifact(self, model, info):
        """Drop the masked triplets: P·diag(λ)·Q does not depend on their order, and peft
        divides by the initial rank, not the surviving one, so loading pads with zeros."""
        tensors = super().artifact(model, info)
        if any(t.is_meta for t in tensors.values()):
            return tensors  # counting without values: the initial budget bounds it
        for name in [n for n in tensors if ".lora_E" in n]:
            keep = tensors[name].view(-1) != 0
            tensors[name] = tensors[name][keep]
            a, b = name.replace("lora_E", "lora_A"), name.replace("lora_E", "lora_B")
            tensors[a], tensors[b] = tensors[a][keep], tensors[b][:, keep]
        return tensors

    def load_artifact(self, model, tensors, info):
        from peft import get_peft_model_state_dict

        shapes = {name: t.shape for name, t in get_peft_model_state_dict(model).items()}
        padded = {}
        for name, tensor in tensors.items():
            padded[name] = tensor.new_zeros(shapes.get(name, tensor.shape))
            padded[name][tuple(slice(0, n) for n in tensor.shape)] = tensor
        super().load_artifact(model, padded, info)
