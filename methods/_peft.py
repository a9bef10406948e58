"""Shared code of the methods that ``peft`` implements: the artifact is peft's adapter state
(head excluded)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from peftbench.plugin.method import HParam, Method
from peftbench.plugin.task import Head

if TYPE_CHECKING:
    from collections.abc import Callable

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


def target_modules_param(default: str) -> HParam:
    """The ``target_modules`` hyperparameter (:func:`target_modules`) with ``default``."""
    return HParam(default, TARGET_MODULES_HELP)


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

    peft_type: str = ""
    """peft's ``PeftType`` value of the tuner (``LORA``, ...). For ``LORA``, LoRA's variants
    (:func:`lora_variant_problems`; the ``optimizer`` hyperparameter, where the method has it,
    picks LoRA+ or LoRA-FA)."""

    def peft_config(self, hp: dict[str, Any], info: ModelInfo) -> Any:
        raise NotImplementedError

    def check_hparams(self, hp):
        problems = super().check_hparams(hp)
        if self.peft_type == "LORA":
            problems += lora_variant_problems(hp, hp.get("r", 8))
        return problems

    def apply(self, model, hp, info):
        from peft import get_peft_model

        from peftbench.plugin.quantize import quantized_bits

        for bits in quantized_bits(model):
            # What transformers sets when it loads a quantized model: peft's cue for its layers.
            setattr(model, f"is_loaded_in_{bits}bit", True)
        model = get_peft_model(model, self.peft_config(hp, info))
        if self.peft_type == "LORA" and hp.get("optimizer") == "lorafa":
            freeze_lora_a(model)  # as LoRA-FA's optimizer will: the counts see it
        return model

    def optimizer(self, model, hp, param_groups):
        if self.peft_type != "LORA":
            return None
        config = next(iter(model.peft_config.values()))
        return lora_optimizer(model, hp, config.r, config.lora_alpha)

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
        """Each tuner layer's base weight -> the bound of its tuner's rule (:data:`RANK_RULES`,
        by the adapter config's ``peft_type``), summed over the active adapters."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        configs = getattr(model, "peft_config", {})
        bounds: dict[int, int | str | None] = {}
        for module in model.modules():
            if not isinstance(module, BaseTunerLayer):
                continue
            weight = getattr(module.get_base_layer(), "weight", None)
            if weight is not None:
                bounds[id(weight)] = layer_rank_bound(module, configs)
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
        """peft's ``merge_and_unload``, or ``None`` for a tuner whose layers peft cannot merge
        (:data:`UNMERGEABLE`). On the meta device (counting without weights) peft's ``unload``:
        the structure a merge leaves, without computing values that are not there."""
        if {_peft_type(c) for c in model.peft_config.values()} & set(UNMERGEABLE):
            return None
        if all(p.is_meta for p in model.parameters()):
            return model.unload()
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


# The rank of the update each peft tuner makes to a weight matrix W (m×n) ---------------------


def _r(layer: Any, adapter: str, config: Any) -> int:
    return layer.r[adapter]


def _lora(layer: Any, adapter: str, config: Any) -> int | str | None:
    init = config.init_lora_weights
    if getattr(config, "alora_invocation_tokens", None):
        return "activated LoRA updates only the tokens after its invocation: no fixed ΔW"
    if getattr(layer, "use_dora", {}).get(adapter) or init == "loftq" or config.kasa_config:
        return None
    if getattr(config, "use_bdlora", None):
        return None
    moved = isinstance(init, str) and init.startswith(("pissa", "olora", "corda", "lora_ga"))
    return 2 * layer.r[adapter] if moved else layer.r[adapter]


def _rank_of_factor(full: Any, low: Any, adapter: str) -> int:
    """The rank a LoKr factor may have: its rank r when stored as a product, else its size."""
    if adapter in low:
        return low[adapter].shape[1]
    return min(full[adapter].shape[-2:])


def _lokr(layer: Any, adapter: str, config: Any) -> int:
    w1 = _rank_of_factor(layer.lokr_w1, layer.lokr_w1_a, adapter)
    return w1 * _rank_of_factor(layer.lokr_w2, layer.lokr_w2_a, adapter)


RANK_RULES: dict[str, tuple[str, Callable[[Any, str, Any], int | str | None]]] = {
    "LORA": (
        "r (ΔW = B·A); 2r for initialisations that move B₀·A₀ out of W (PiSSA, OLoRA, CorDA, "
        "LoRA-GA: ΔW = B·A − B₀·A₀); min(m, n) for DoRA (its magnitude rescales every column), "
        "LoftQ (W is replaced by its quantization), KaSA and block-diagonal LoRA",
        _lora,
    ),
    "ADALORA": ("r (ΔW = B·diag(E)·A)", _r),
    "ADAMSS": (
        "the sum of the subspace ranks (every row of ΔW lies in the row space of one subspace's "
        "A_i·newB)",
        lambda layer, adapter, config: sum(a.shape[0] for a in layer.adamss_A[adapter]),
    ),
    "LOHA": (
        "r² (ΔW = (W1a·W1b) ⊙ (W2a·W2b): rank(X ⊙ Y) ≤ rank X · rank Y)",
        lambda layer, adapter, config: layer.r[adapter] ** 2,
    ),
    "LOKR": (
        "rank(W1)·rank(W2) (ΔW = W1 ⊗ W2, rank(A ⊗ B) = rank A · rank B; a factor stored as a "
        "product has rank r, else the smaller side of its shape)",
        _lokr,
    ),
    "VERA": ("r (ΔW = Λb·B·Λd·A, A and B shared, frozen)", _r),
    "PVERA": ("r (ΔW = Λb·B·Λd·A, as VeRA)", _r),
    "HRA": (
        "r (ΔW = W·(H − I), H a product of r Householder reflections: H − I has rank ≤ r)",
        lambda layer, adapter, config: layer.hra_r[adapter],
    ),
    "VBLORA": ("r (ΔW = B·A, rows of A and B mixed from a shared vector bank)", _r),
    "UNILORA": ("r (ΔW = B·A, A and B drawn from one shared vector)", _r),
    "DELORA": ("r (ΔW = B·Ξ·A, normalised)", _r),
    "TINYLORA": ("r (ΔW = U·M·Vᵀ in W's top-r singular subspace)", _r),
    "PSOFT": ("r (ΔW = B·(R − I)·A)", _r),
    "DEFT": (
        "r (ΔW = Q_P·(R − Pᵀ·W), Q_P with r columns)",
        lambda layer, adapter, config: layer.deft_P[adapter].shape[1],
    ),
    "PEANUT": ("r (ΔW = B·f(A·W): B has r columns)", _r),
    "MISS": (
        "r (ΔW repeats one trained r-wide block)",
        lambda layer, adapter, c: layer.miss_r[adapter],
    ),
    "GRALORA": (
        "k·r + hybrid_r (k² blocks of rank r/k: each of the k block rows has rank ≤ r; plus the "
        "hybrid LoRA's rank)",
        lambda layer, adapter, config: (
            layer.gralora_k[adapter] * layer.r[adapter] + layer.hybrid_r[adapter]
        ),
    ),
    "FOURIERFT": (
        "2·n_frequency (ΔW = Re(IDFT2(S)) for a spectrum S with n_frequency entries: the real "
        "part of each rank-1 complex term has rank ≤ 2)",
        lambda layer, adapter, config: 2 * layer.fourierft_n_frequency[adapter],
    ),
    "WAVEFT": (
        "n_frequency (each trained wavelet coefficient is a separable, rank-1 basis image)",
        lambda layer, adapter, config: layer.waveft_n_frequency[adapter],
    ),
    "SHIRA": (
        "the number of trained entries (ΔW is sparse: at most one rank per nonzero)",
        lambda layer, adapter, config: layer.shira_weight[adapter].numel(),
    ),
    "SUPERTUNING": (
        "the number of selected entries, plus r in Supra mode (a sparse ΔW plus a LoRA)",
        lambda layer, adapter, config: (
            layer.supertuning_values[adapter].numel() + layer.supertuning_rank[adapter]
        ),
    ),
    "TRAINABLE_TOKENS": (
        "the number of trained tokens (ΔW changes those rows of the embedding)",
        lambda layer, adapter, config: len(layer.token_indices[adapter]),
    ),
    "BEFT": ("0: biases only, no weight matrix changes", lambda layer, adapter, config: 0),
    **{
        peft_type: (f"min(m, n): {why}", lambda layer, adapter, config: None)
        for peft_type, why in (
            ("IA3", "ΔW = W·diag(l − 1) (or diag(l − 1)·W): the rank of W on the rescaled columns"),
            ("OFT", "ΔW = W·(R − I) for a block-diagonal orthogonal R"),
            ("BOFT", "ΔW = W·(R − I) for a butterfly product of orthogonal R"),
            ("ROAD", "ΔW = (R − I)·W for 2×2 rotations R"),
            ("HIRA", "ΔW = W ⊙ (B·A): rank(X ⊙ Y) ≤ rank X · r"),
            ("C3A", "ΔW is block-circulant"),
            ("RANDLORA", "ΔW sums low-rank products over enough shared random bases to span W"),
            ("OSF", "W's minor singular subspace is trained"),
            ("FROD", "ΔW = U·(S + L)·Vᵀ − W, a full decomposition of W"),
            ("GLORA", "ΔW = W·A + B, W times a low-rank or diagonal A"),
            ("LN_TUNING", "it trains a copy of each target (norms: 1-D, no matrix)"),
        )
    },
    "LILY": (
        "none: the mixture of its B matrices depends on each batch's inputs (no fixed ΔW; each "
        "forward's update has rank ≤ r)",
        lambda layer, adapter, config: "Lily's update depends on the batch: no fixed ΔW",
    ),
    "SHADOW": (
        "none: the update depends on the input (no fixed ΔW)",
        lambda layer, adapter, config: "ShadowPEFT's update depends on the input: no fixed ΔW",
    ),
}
"""Per ``PeftType`` value: the rule, in words (docs/parameters.md shows the table), and the
bound it gives for one tuner layer and adapter (``None``: min(m, n); a string: why no rank can
be declared). A tuner not listed declares min(m, n) (:data:`FULL_RANK_RULE`)."""

FULL_RANK_RULE = "min(m, n): no bound below the matrix is declared"

UNMERGEABLE = {
    "LILY": "Lily's layers do not merge (peft raises NotImplementedError)",
    "SHADOW": "ShadowPEFT's input-dependent update does not merge",
    "POLY": "Polytropon's layers do not merge (peft raises NotImplementedError)",
    "ADAPTION_PROMPT": "LLaMA-Adapter's gated prompts are not a weight update",
    "XLORA": "X-LoRA mixes its LoRA experts per token",
}
"""The tuners (``PeftType`` value) whose model peft cannot merge, with the reason; a test
merges every tuner to keep this in step with peft."""


PROMPT_LEARNING = frozenset(
    ("PROMPT_TUNING", "MULTITASK_PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "CPT", "CARTRIDGE")
)
"""peft's prompt-learning tuners (``PeftConfig.is_prompt_learning``): they change no weight."""
PROMPT_RULE = "0: no weight matrix changes (the tuner learns a prompt or a key/value prefix)"


def rank_rule(peft_type: str) -> str:
    """What bounds the rank of a peft tuner's update to a weight matrix, in words (its entry of
    :data:`RANK_RULES`); ``peft_type`` is a ``PeftType`` value (``LORA``, ``IA3``, ...). Needs
    no import of peft."""
    key = peft_type.upper()
    if key in PROMPT_LEARNING:
        return PROMPT_RULE
    if key in RANK_RULES:
        return RANK_RULES[key][0]
    if key in UNMERGEABLE:
        return f"none: not merged ({UNMERGEABLE[key]})"
    return FULL_RANK_RULE


def layer_rank_bound(layer: Any, configs: dict[str, Any]) -> int | str | None:
    """The bound :data:`RANK_RULES` gives a tuner layer, summed over its active adapters
    (``configs``: the model's ``peft_config``)."""
    total = 0
    for adapter in layer.active_adapters:
        config = configs.get(adapter)
        owned = any(adapter in getattr(layer, name, {}) for name in layer.adapter_layer_names)
        if config is None or not owned:
            continue
        rule = RANK_RULES.get(_peft_type(config))
        bound = rule[1](layer, adapter, config) if rule else None
        if bound is None or isinstance(bound, str):
            return bound
        total += bound
    return total


def _peft_type(config: Any) -> str:
    """A peft config's ``PeftType`` value (``LORA``, ...)."""
    return getattr(config.peft_type, "value", config.peft_type)


# LoRA's variants: initialisations and optimizers (lora, its presets, peft:lora) ---------------

LORA_INITS = ("default", "gaussian", "pissa", "pissa_niter_<n>", "olora", "orthogonal", "mica")
"""The ``init_lora_weights`` values a run takes (``default``: peft's ``True``, A as
``nn.Linear`` does, B zero; peft's own ``true`` and ``false`` too)."""
LORA_INIT_REFUSED = {
    "eva": "EVA sets A from the SVD of each layer's inputs, which peft.initialize_lora_eva_weights "
    "computes over batches of training data before training; a method's apply gets the model, "
    "not the data",
    "corda": "CorDA builds its adapters from the inputs' covariance, which "
    "peft.tuners.lora.corda.preprocess_corda collects over batches of data before the adapters "
    "exist; a method's apply gets the model, not the data",
    "lora_ga": "LoRA-GA sets A and B from gradients over batches of data before training; a "
    "method's apply gets the model, not the data",
    "loftq": "LoftQ (peft's loftq_init) quantizes the base itself, with bitsandbytes on a CUDA or "
    "XPU device only, and leaves the base holding its dequantized weights; peftbench quantizes "
    "through the precision axis (QLoRA: lora at precision nf4)",
}
"""``init_lora_weights`` values refused at plan time, with the reason."""
LORA_OPTIMIZERS = {
    "adamw": "the harness's AdamW",
    "loraplus": "LoRA+ (Hayou et al., 2024, arXiv:2402.12354): B at loraplus_lr_ratio times A's "
    "rate (peft.optimizers.create_loraplus_optimizer; 1-D parameters, the head's bias "
    "included, at B's rate, as peft groups them)",
    "lorafa": "LoRA-FA (Zhang et al., 2023, arXiv:2308.03303): A frozen at its initialisation, B "
    "trained with projected gradients (peft.optimizers.create_lorafa_optimizer)",
}
"""The ``optimizer`` values of LoRA and what each is."""


def lora_init(value: str) -> bool | str:
    """The ``init_lora_weights`` peft takes for a value of :data:`LORA_INITS`."""
    return True if value == "default" else value


def lora_variant_problems(hp: dict[str, Any], r: int) -> list[str]:
    """What is wrong with LoRA's variant hyperparameters (``init_lora_weights``, ``use_dora``,
    ``optimizer``), each naming the value and what is valid."""
    init, optimizer = hp.get("init_lora_weights", "default"), hp.get("optimizer", "adamw")
    problems = []
    if init in LORA_INIT_REFUSED:
        problems.append(f"init_lora_weights={init!r}: {LORA_INIT_REFUSED[init]}")
    elif not (init in (*LORA_INITS, True, False) or re.fullmatch(r"pissa_niter_\d+", str(init))):
        problems.append(f"init_lora_weights={init!r}; valid: {', '.join(LORA_INITS)}")
    if init == "orthogonal" and r % 2:
        problems.append(f"init_lora_weights='orthogonal' needs an even r, not r={r}")
    if optimizer not in LORA_OPTIMIZERS:
        problems.append(f"optimizer={optimizer!r}; valid: {', '.join(LORA_OPTIMIZERS)}")
    elif optimizer != "adamw" and hp.get("head_lr"):
        problems.append(
            f"head_lr={hp['head_lr']!r} with optimizer={optimizer!r}: peft's optimizer groups "
            "the parameters itself (the head at lr); valid: head_lr=0"
        )
    if optimizer == "lorafa" and hp.get("use_dora"):
        problems.append(
            "optimizer='lorafa' with use_dora=true: LoRA-FA's optimizer pairs each layer's "
            "lora_A and lora_B and has no update for DoRA's magnitude; valid: use_dora=false"
        )
    return problems


def freeze_lora_a(model: Any) -> None:
    """LoRA-FA's frozen A (as ``create_lorafa_optimizer`` sets it), set when the method is
    applied so that the counts see it."""
    for name, parameter in model.named_parameters():
        if ".lora_A." in name:
            parameter.requires_grad_(False)


def lora_optimizer(model: Any, hp: dict[str, Any], r: int, alpha: float) -> Any:
    """The optimizer ``hp["optimizer"]`` names (:data:`LORA_OPTIMIZERS`), built by peft, or
    ``None`` for the harness's AdamW."""
    import torch

    optimizer = hp.get("optimizer", "adamw")
    if optimizer == "loraplus":
        from peft.optimizers import create_loraplus_optimizer

        return create_loraplus_optimizer(
            model,
            torch.optim.AdamW,
            lr=hp["lr"],
            loraplus_lr_ratio=hp["loraplus_lr_ratio"],
            loraplus_weight_decay=hp["weight_decay"],
        )
    if optimizer == "lorafa":
        from peft.optimizers import create_lorafa_optimizer

        return create_lorafa_optimizer(
            model, r=r, lora_alpha=alpha, lr=hp["lr"], weight_decay=hp["weight_decay"]
        )
    return None
