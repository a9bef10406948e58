"""VeRA: Vector-based Random Matrix Adaptation (Kopiczko, Blankevoort & Asano, 2024,
arXiv:2310.11454), through ``peft``.

One pair of frozen random low-rank matrices A (r×d_in), B (d_out×r) is shared by all adapted
layers; each layer trains only two scaling vectors: ΔW = diag(λ_b)·B·diag(λ_d)·A, i.e.
r + d_out parameters per layer. A and B are regenerated from a seed, so the artifact holds only
the vectors (peft's ``save_projection`` is off). λ_b starts at zero, λ_d at 0.1 (the paper's).
peft needs the adapted layers to share one shape: the default targets (query and value on
BERT, the paper's choice; GPT-2's fused projection) do. Defaults: r=256 (the paper's for
RoBERTa-large; 1024 for base), lr 4e-3 (the paper's range for RoBERTa is 4e-3 to 1e-2).
Mergeable. Architectures: those peft has VeRA defaults for (BERT family, GPT-2, Llama, ...).
"""

from __future__ import annotations

from peftbench import register_method
from peftbench.methods._peft import PeftMethod, target_modules, target_modules_param
from peftbench.plugin.method import AT_LEAST_ONE, NON_NEGATIVE, HParam, learning_rate


@register_method("vera")
class VeRA(PeftMethod):
    description = "VeRA: shared frozen random low-rank matrices, trained scaling vectors (peft)"
    paper = "Kopiczko et al., 2024, VeRA: Vector-based Random Matrix Adaptation, arXiv:2310.11454"
    hyperparameters = {
        "lr": learning_rate(4e-3),
        "r": HParam(256, "rank of the shared frozen random matrices", AT_LEAST_ONE),
        "target_modules": target_modules_param("auto"),
        "d_initial": HParam(0.1, "initial value of the scaling vector λ_d", NON_NEGATIVE),
        "seed": HParam(
            0, "seed of the shared random matrices (peft's projection_prng_key)", NON_NEGATIVE
        ),
    }
    family = "low-rank"
    rank_rule = "r per adapted matrix (shared random bases)"
    lr_range = (1e-3, 1e-2)

    def peft_config(self, hp, info):
        from peft import VeraConfig

        return VeraConfig(
            r=hp["r"],
            target_modules=target_modules(hp["target_modules"]),
            d_initial=hp["d_initial"],
            projection_prng_key=hp["seed"],
            save_projection=False,
        )
