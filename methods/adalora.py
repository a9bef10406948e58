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

from peftbench import register_method
from peftbench.methods._peft import PeftMethod, target_modules, target_modules_param, task_type
from peftbench.plugin.method import AT_LEAST_ONE, NON_NEGATIVE, UNIT, HParam, learning_rate


@register_method("adalora")
class AdaLoRA(PeftMethod):
    description = "AdaLoRA: SVD-form LoRA whose rank budget is reallocated by importance (peft)"
    paper = "Zhang et al., 2023, Adaptive Budget Allocation for PEFT (AdaLoRA), arXiv:2303.10512"
    hyperparameters = {
        "lr": learning_rate(1e-3),
        "target_modules": target_modules_param("all-linear"),
        "init_r": HParam(12, "rank of every adapted matrix at the start", AT_LEAST_ONE),
        "target_r": HParam(
            8, "average rank per matrix once the budget has fallen (at most init_r)", AT_LEAST_ONE
        ),
        "alpha": HParam(32, "scaling numerator: the update is multiplied by alpha/r", NON_NEGATIVE),
        "tinit": HParam(
            0.1, "fraction of the steps trained before the budget starts to fall", UNIT
        ),
        "tfinal": HParam(
            0.3, "fraction of the steps, at the end, that train the final allocation", UNIT
        ),
        "delta_t": HParam(
            10, "optimizer steps between two reallocations of the budget", AT_LEAST_ONE
        ),
        "beta": HParam(0.85, "smoothing of the importance scores (peft's beta1 and beta2)", UNIT),
        "orth_reg_weight": HParam(
            0.1, "weight of the orthogonality regulariser on P and Q", NON_NEGATIVE
        ),
    }
    family = "low-rank"
    rank_rule = "init_r per adapted matrix, target_r on average once the budget has fallen"
    lr_range = (5e-4, 1.2e-3)

    def check_hparams(self, hp):
        """The declared ranges, and the budget only falls: ``target_r`` <= ``init_r`` (which
        peft's config does not check)."""
        problems = super().check_hparams(hp)
        if hp["target_r"] > hp["init_r"]:
            problems.append(
                f"target_r={hp['target_r']} with init_r={hp['init_r']}: the budget only falls; "
                f"valid: target_r from 1 to {hp['init_r']}"
            )
        return problems

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
