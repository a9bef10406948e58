"""UniPELT (Mao et al., 2022, "UniPELT: A Unified Framework for Parameter-Efficient Language
Model Tuning", arXiv:2110.07577): LoRA, prefix tuning and an adapter in every layer, each
scaled by a learned gate, so the model learns which to use per layer and per example.

A gate is sigmoid(w·x + b) (d + 1 parameters), computed from the submodule's input as in the
paper's code; on an encoder it is averaged over the sequence (one gate per example), on a
decoder it is one gate per token (an average would let later tokens, the answer among them,
steer earlier positions, and would change as ``generate`` appends tokens):
* gated LoRA on the query and value projections (``lora_targets=auto``: query,value on the
  BERT family, q_proj,v_proj on Llama, GPT-2's fused c_attn): g·B·A·x (the gate replaces
  alpha/r);
* gated prefix: l key and value vectors of width w per layer (w = d, or less with
  grouped-query attention), computed while training by an MLP (d → ``prefix_hidden`` → 2·L·w);
  the artifact stores the 2·L·l·w vectors. On an encoder the gate scales the prefix's keys and
  values; on a decoder, whose cached keys all queries share, it scales the prefix's
  unnormalised attention weights of each query (log g added to their scores). Our own
  injection, through the attention's key/value cache but outside the model's own cache: the
  position ids are unchanged and ``generate`` works as it does unadapted;
* gated adapter after the feed-forward block (Pfeiffer placement): h + g·W_up·ReLU(W_down·h).

Defaults from the paper: prefix length 10, LoRA rank 8, adapter reduction factor 16; MLP width
512 (Li & Liang's) and lr 5e-4 are our choices. Architectures: BERT family (bert, roberta,
xlm-roberta, electra), GPT-2, Llama family (llama, mistral, qwen2).
"""

from __future__ import annotations

from peftbench import register_method
from peftbench.methods._modules import (
    LAYOUTS,
    DeepPrefixMethod,
    freeze_all,
    transformer_layers,
)
from peftbench.plugin.method import AT_LEAST_ONE, HParam, learning_rate


@register_method("unipelt")
class UniPELT(DeepPrefixMethod):
    description = "UniPELT: gated LoRA + gated prefix + gated adapter in every layer"
    paper = "Mao et al., 2022, UniPELT, arXiv:2110.07577"
    hyperparameters = {
        "lr": learning_rate(5e-4),
        "prefix_length": HParam(10, "prefix vectors l per layer", AT_LEAST_ONE),
        "prefix_hidden": HParam(
            512, "width of the MLP that computes the prefix while training", AT_LEAST_ONE
        ),
        "lora_r": HParam(8, "rank of the gated LoRA update", AT_LEAST_ONE),
        "lora_targets": HParam(
            "auto",
            "attention submodules that get the gated LoRA update: auto (the query and value "
            "projections) or comma-separated names",
        ),
        "reduction_factor": HParam(
            16, "the gated adapter's width is the hidden size divided by this", AT_LEAST_ONE
        ),
    }
    family = "hybrid"
    rank_rule = "lora_r per query and value projection (gated LoRA), plus added modules"
    lr_range = (1e-4, 1e-3)

    def apply(self, model, hp, info):
        from peftbench.methods._layers import (
            add_deep_prefix,
            add_gated_low_rank,
            add_serial_adapter,
        )

        freeze_all(model)
        layout = LAYOUTS[info.model_type]
        targets = (
            layout.query_value
            if hp["lora_targets"] == "auto"
            else [name.strip() for name in hp["lora_targets"].split(",")]
        )
        add_deep_prefix(model, info, hp["prefix_length"], hp["prefix_hidden"], gated=True)
        size = max(1, info.hidden_size // hp["reduction_factor"])
        causal = layout.decoder
        layers = transformer_layers(model, info)
        names = {name for name, _ in layers[0].get_submodule(layout.self_attention).named_modules()}
        unknown = [name for name in targets if name not in names]
        if unknown:
            raise ValueError(
                f"lora_targets={hp['lora_targets']!r}: {', '.join(unknown)} not in "
                f"{info.model_type}'s attention; valid: {', '.join(sorted(n for n in names if n))}"
            )
        for layer in layers:
            attention = layer.get_submodule(layout.self_attention)
            for name in targets:
                add_gated_low_rank(attention.get_submodule(name), hp["lora_r"], causal)
            ffn_output = layer.get_submodule(layout.ffn_output)
            add_serial_adapter(ffn_output, size, "relu", gated=True, causal=causal)
        return model
