"""The models PEFT papers report on, at their real size, for counting without weights.

Each config ships with peftbench (``configs/<name>.json``, the hub checkpoint's ``config.json``),
so ``peftbench count`` builds these models on the meta device offline. Their ``location`` is the
hub id: online users train them through the ordinary ``transformers`` loading path (the Llama
checkpoints are gated: accept Meta's licence on the hub first).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftbench import register_model
from peftbench.plugin.model import TransformersModel
from peftbench.plugin.task import Head

if TYPE_CHECKING:
    from transformers import PretrainedConfig

CONFIGS = Path(__file__).parent / "configs"

HUB_IDS = {
    "bert-base": "google-bert/bert-base-uncased",
    "bert-large": "google-bert/bert-large-uncased",
    "roberta-base": "FacebookAI/roberta-base",
    "roberta-large": "FacebookAI/roberta-large",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "t5-base": "google-t5/t5-base",
    "llama-2-7b": "meta-llama/Llama-2-7b-hf",
    "llama-3-70b": "meta-llama/Meta-Llama-3-70B",
    "llama-3.2-3b": "meta-llama/Llama-3.2-3B",
}

MATRIX_COLUMNS: dict[str, tuple[tuple[str, Head], ...]] = {
    "bert-base": (("BERT", Head.CLASSIFICATION),),
    "roberta-base": (("RoBERTa", Head.CLASSIFICATION),),
    "gpt2-medium": (("GPT-2", Head.CLASSIFICATION), ("GPT-2 LM", Head.CAUSAL_LM)),
    "t5-base": (("T5", Head.CLASSIFICATION),),
    "llama-2-7b": (("Llama", Head.CLASSIFICATION), ("Llama LM", Head.CAUSAL_LM)),
}
"""The configuration that stands for each architecture in docs/methods.md's method ×
architecture matrix, and its columns (``ModelSource.matrix_columns``): a sequence classifier,
and for a decoder also the language-model head of a causal-LM task."""


class PaperScaleModel(TransformersModel):
    """A hub model whose config comes from the copy shipped with peftbench (no network)."""

    def __init__(self, name: str, location: str) -> None:
        super().__init__(location, description=f"{location} (config shipped; weights from hub)")
        self.config_file = CONFIGS / f"{name}.json"
        self.matrix_columns = MATRIX_COLUMNS.get(name, ())

    def config(self, **overrides: Any) -> PretrainedConfig:
        from transformers import AutoConfig

        values = {**json.loads(self.config_file.read_text()), **self.config_overrides, **overrides}
        return AutoConfig.for_model(**values)


for _name, _location in HUB_IDS.items():
    register_model(_name)(PaperScaleModel(_name, _location))
