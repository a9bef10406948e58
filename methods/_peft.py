"""Shared code of the methods that ``peft`` implements: the artifact is peft's adapter state
(head excluded)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from peftbench.plugin.method import Method
from peftbench.plugin.task import Head

if TYPE_CHECKING:
    from peftbench.plugin.model import ModelInfo

REPARAMETRIZATIONS = ("transform", "mlp_head", "lstm_head")
"""peft's prompt-encoder modules that compute the prompt while training (prefix, P-tuning)."""
WRAPPER_PREFIXES = ("base_model.model.", "base_model.")
"""What peft's model puts in front of the transformers model's names: ``base_model.model.``
(``PeftModel`` -> tuner model -> model), ``base_model.`` for prompt learning (no tuner)."""
BASE_LAYER = ".base_layer."
"""peft's tuner layers hold the layer they adapt as ``base_layer``."""
FROZEN_COPY = ".original_module."
"""peft keeps a frozen original of each module whose copy it trains (``modules_to_save``)."""
LAST_TOKEN_CLASSIFIERS = (
    "bloom", "falcon", "gemma", "gemma2", "gpt2", "gpt_neo", "gpt_neox", "gptj", "llama",
    "mistral", "mixtral", "opt", "phi", "phi3", "qwen2", "qwen3",
)  # fmt: skip
"""Decoders whose sequence classifier reads the last token that is not padding; it finds it
from ``input_ids``, which input-level prompt methods replace by ``inputs_embeds``."""


def task_type(info: ModelInfo) -> Any:
    """peft's task type for the model's head: sequence classification or causal LM (peft's
    prompt methods then prepend -100 labels for the virtual tokens)."""
    from peft import TaskType

    return TaskType.CAUSAL_LM if Head.of(info.head).language_model else TaskType.SEQ_CLS


TARGET_MODULES_HELP = (
    "modules that get the update: auto (peft's default for the architecture), all-linear, "
    "or comma-separated module names"
)
"""Meaning of the ``target_modules`` hyperparameter (:func:`target_modules`), for ``--help``."""


def target_modules(value: str) -> list[str] | str | None:
    """The ``target_modules`` hyperparameter for peft: ``auto`` (peft's default for the
    architecture, e.g. query,value for BERT), ``all-linear``, or comma-separated module names."""
    if value == "auto":
        return None
    if value == "all-linear":
        return value
    return [name.strip() for name in value.split(",")]


class PeftMethod(Method):
    """A method given by a ``peft`` config. The head stays a plain module for the harness
    (prompt methods are the exception: peft's sequence-classification model trains a copy).
    On a quantized base (bitsandbytes layers) peft's tuners wrap those layers with their
    quantized variants."""

    def peft_config(self, hp: dict[str, Any], info: ModelInfo) -> Any:
        raise NotImplementedError

    def apply(self, model, hp, info):
        from peft import get_peft_model

        from peftbench.plugin.quantize import quantized_bits

        for bits in quantized_bits(model):
            # What transformers sets when it loads a quantized model: peft's cue for its layers.
            setattr(model, f"is_loaded_in_{bits}bit", True)
        return get_peft_model(model, self.peft_config(hp, info))

    native_format = "peft"

    def save_native(self, model, info, folder):
        """peft's ``save_pretrained`` (``adapter_model.safetensors``, ``adapter_config.json``),
        which ``PeftModel.from_pretrained`` reads."""
        from peft import get_peft_model_state_dict

        model.save_pretrained(str(folder), safe_serialization=True)
        return sorted(get_peft_model_state_dict(model))

    def load_native(self, model, info, folder):
        from peft import PeftModel

        from peftbench.plugin.quantize import quantized_bits

        for bits in quantized_bits(model):  # as in apply: peft's cue for its quantized layers
            setattr(model, f"is_loaded_in_{bits}bit", True)
        return PeftModel.from_pretrained(model, str(folder), is_trainable=False)

    def base_name(self, key):
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key.removeprefix(prefix)
                break
        return key.replace(BASE_LAYER, ".")

    def is_frozen_copy(self, name):
        return FROZEN_COPY in name

    def update_rank_bounds(self, model):
        from peft.tuners.lora import LoraLayer
        from peft.tuners.tuners_utils import BaseTunerLayer

        bounds: dict[int, int | None] = {}
        for module in model.modules():
            if not isinstance(module, BaseTunerLayer):
                continue
            weight = getattr(module.get_base_layer(), "weight", None)
            if weight is None:
                continue
            bounds[id(weight)] = (
                sum(module.r[adapter] for adapter in module.active_adapters)
                if isinstance(module, LoraLayer)
                else None
            )
        return bounds

    def artifact(self, model, info):
        from peft import get_peft_model_state_dict

        state = get_peft_model_state_dict(model)
        return {name: t.detach() for name, t in state.items() if not self.is_head(name, info)}

    def load_artifact(self, model, tensors, info):
        from peft import get_peft_model_state_dict, set_peft_model_state_dict

        # peft loads a trained head copy with the adapter: pass the model's own (the harness's).
        state = get_peft_model_state_dict(model)
        head = {k: v for k, v in state.items() if self.is_head(k, info)}
        unexpected = set_peft_model_state_dict(model, {**head, **tensors}).unexpected_keys
        if unexpected:
            raise KeyError(f"{self.name}: artifact tensors the model lacks: {unexpected}")

    def merge(self, model):
        return model.merge_and_unload()


class PromptMethod(PeftMethod):
    """A prompt-learning method. The artifact is the prompt as the model uses it (for prefix
    tuning and P-tuning: the output of the reparametrisation, not its weights), under peft's
    name for it, ``prompt_embeddings``."""

    def artifact(self, model, info):
        import torch

        adapter = model.active_adapter
        encoder = model.prompt_encoder[adapter]
        if model.peft_config[adapter].inference_mode:
            return {"prompt_embeddings": encoder.embedding.weight.detach()}
        weight = encoder.embedding.weight
        tokens = torch.arange(weight.shape[0], device=weight.device)
        return {"prompt_embeddings": encoder(tokens[None])[0].detach()}

    def load_artifact(self, model, tensors, info):
        import torch
        from torch import nn

        (prompt,) = tensors.values()
        adapter = model.active_adapter
        encoder = model.prompt_encoder[adapter]
        old = encoder.embedding.weight
        encoder.embedding = nn.Embedding(*prompt.shape, device=old.device, dtype=old.dtype)
        with torch.no_grad():
            encoder.embedding.weight.copy_(prompt)
        for name in REPARAMETRIZATIONS:
            if hasattr(encoder, name):
                delattr(encoder, name)
        # peft's inference mode uses the embedding as the prompt, without the reparametrisation.
        model.peft_config[adapter].inference_mode = True

    def merge(self, model):
        return None


def input_prompt_unsupported(info: ModelInfo) -> str | None:
    """Why a prompt prepended to the input embeddings cannot apply to the model, or ``None``
    (a decoder's language-model head takes it: only its last-token classifier cannot)."""
    if info.head == "classification" and info.model_type in LAST_TOKEN_CLASSIFIERS:
        return (
            f"{info.model_type} classifies from the last non-padding token, which it finds from "
            "input_ids; peft passes the prompted input as inputs_embeds, so right-padded "
            "examples would be classified from a padding position"
        )
    return None
