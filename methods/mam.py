"""MAM adapter (He et al., 2022, "Towards a Unified View of Parameter-Efficient Transfer
Learning", arXiv:2110.04366): prefix tuning on attention plus a scaled parallel adapter on the
feed-forward block ("mix-and-match").

* Prefix: l key and value vectors in front of every self-attention layer's own, computed while
  training by an MLP (d → ``prefix_hidden`` → 2·L·w, tanh; w the key width, d or less with
  grouped-query attention) from l embeddings as in Li & Liang; the artifact stores the 2·L·l·w
  vectors. Our own injection, through the attention's key/value cache (as peft's prefix tuning
  on decoders) but outside the model's own cache: the position ids are unchanged, a decoder's
  rotary embedding is not applied to the prefix, and ``generate`` works as it does unadapted.
* Scaled parallel adapter: FFN(x) + s·W_up·ReLU(W_down·x), up-projection starting at zero:
  2·d·m + m + d parameters per layer. On the BERT family it is added before the residual layer
  norm; on a decoder (pre-norm) x is the FFN's normed input, and the sum goes to the residual.

Defaults from the paper: l=30, m=512, s=4; MLP width 512 (Li & Liang's) and lr 1e-4 are our
choices. Architectures: BERT family (bert, roberta, xlm-roberta, electra), GPT-2, Llama family
(llama, mistral, qwen2).
"""

from __future__ import annotations

from peftbench import register_method
from peftbench.methods._modules import (
    LAYOUTS,
    DeepPrefixMethod,
    freeze_all,
    transformer_layers,
)
from peftbench.plugin.method import AT_LEAST_ONE, NON_NEGATIVE, HParam, learning_rate


@register_method("mam")
class MAMAdapter(DeepPrefixMethod):
    description = "MAM adapter: prefix tuning on attention + scaled parallel adapter on the FFN"
    paper = (
        "He et al., 2022, Towards a Unified View of Parameter-Efficient Transfer Learning, "
        "arXiv:2110.04366"
    )
    hyperparameters = {
        "lr": learning_rate(1e-4),
        "prefix_length": HParam(30, "prefix vectors l per layer", AT_LEAST_ONE),
        "prefix_hidden": HParam(
            512, "width of the MLP that computes the prefix while training", AT_LEAST_ONE
        ),
        "bottleneck": HParam(512, "parallel adapter bottleneck width m", AT_LEAST_ONE),
        "scale": HParam(4.0, "scale s of the parallel adapter's output", NON_NEGATIVE),
    }
    family = "hybrid"
    rank_rule = "no weight matrix updated (prefix and parallel modules added)"
    lr_range = (5e-5, 5e-4)

    def apply(self, model, hp, info):
        from peftbench.methods._layers import add_deep_prefix, add_parallel_adapter

        freeze_all(model)
        add_deep_prefix(model, info, hp["prefix_length"], hp["prefix_hidden"])
        layout = LAYOUTS[info.model_type]
        for layer in transformer_layers(model, info):
            ffn = layer.get_submodule(layout.ffn if layout.decoder else layout.ffn_residual)
            add_parallel_adapter(
                ffn, info.hidden_size, hp["bottleneck"], hp["scale"], decoder=layout.decoder
            )
        return model
