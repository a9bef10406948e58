"""Every tuner of the installed peft as a method, ``peft:<tuner>`` (the lower-case
``peft.PeftType`` value: ``peft:oft``, ``peft:loha``, ``peft:lora``, ...), generated from peft
when first asked for: upgrading peft brings its new tuners with no code change.

Each tuner's hyperparameters are its peft config dataclass's fields, with their types,
defaults and ``metadata["help"]``; the fields that are not hyperparameters
(:data:`NOT_HYPERPARAMETERS`: peft's bookkeeping, what peft reads from the model, the task
head, which is the harness's) are left out, and so are nested configuration objects (LoftQ,
EVA, CorDA, ... initialisations). peftbench adds its own ``lr`` (default 1e-4, the AdamW rate
of peft's own method comparison) and owns the training loop. ``target_modules=auto`` is what
peft picks for the model type, or every linear layer outside the head where peft has no
default for it. peft's own config checks run at plan time (:meth:`PeftTuner.check_hparams`),
and the config is applied to the model's meta-device build there too, so a bad value is
refused before any job.

A tuner one run cannot serve is refused at plan time with the reason (:data:`REFUSED`), and one
that serves only some models says why for the others (:data:`REFUSED_ON`: the run is recorded
``unsupported``); found by trying every tuner (``benchmarks/peft_tuner_trials.py``, whose
outcomes are ``peft_tuners.csv``: ``PeftTuner.tried``, ``peftbench list methods``,
docs/methods.md). peftbench's own 17 methods keep their names and
their papers' defaults; ``peft:lora`` is peft's LoRA with peft's defaults.
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import importlib.util
import logging
import re
import sys
import types
import typing
from collections.abc import Callable
from functools import cache, cached_property
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from peftbench import METHODS
from peftbench.methods._peft import (
    TARGET_MODULES_HELP,
    PeftMethod,
    PromptMethod,
    input_prompt_unsupported,
    rank_rule,
    target_modules,
    task_type,
)
from peftbench.plugin.method import HParam, is_head, learning_rate

log = logging.getLogger(__name__)

PREFIX = "peft:"
LR = 1e-4
"""Default ``lr`` of every tuner: the AdamW rate of peft's own method comparison (MetaMathQA)."""
TRIALS = Path(__file__).with_name("peft_tuners.csv")
"""What a 3-step run of each tuner gave on a classifier and a causal LM (``PeftTuner.tried``)."""

REFUSED: dict[str, str] = {
    "XLORA": "X-LoRA mixes LoRA adapters trained beforehand (its `adapters` field names their "
    "folders); one run trains from scratch",
    "POLY": "Polytropon routes each example by its task id (task_ids in every forward call); "
    "a peftbench task has one task and passes none",
    "MULTITASK_PROMPT_TUNING": "multitask prompt tuning selects each example's prompt by its "
    "task id (task_ids in every forward call); a peftbench task passes none",
    "CPT": "CPT learns from in-context examples (cpt_token_ids) and computes its loss only where "
    "each batch's input_type_mask marks the answers, which its own data collator builds; a run "
    "passes none, so every label is masked (tried on tiny-llama with cpt_token_ids given: the "
    "loss is NaN at the first step)",
}
"""Tuners no peftbench run can serve, by ``PeftType`` value, with the reason."""


def _adaption_prompt_models(info: Any) -> str | None:
    from peft.tuners.adaption_prompt.config import TRANSFORMERS_MODEL_CONFIG

    if info.model_type in TRANSFORMERS_MODEL_CONFIG:
        return None
    return (
        f"LLaMA-Adapter computes the attention of its prompts itself for the model types peft "
        f"knows ({', '.join(sorted(TRANSFORMERS_MODEL_CONFIG))}), not {info.model_type!r}"
    )


def _decoder_only(info: Any) -> str | None:
    """Decoder-only: a model type transformers has a causal-LM class for and no masked-LM one."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = info.model_type
    if kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return None
    return f"ShadowPEFT rides a decoder-only model's loop over its layers; {kind!r} is not one"


REFUSED_ON: dict[str, Callable[[Any], str | None]] = {
    "ADAPTION_PROMPT": _adaption_prompt_models,
    "SHADOW": _decoder_only,
    "PROMPT_TUNING": input_prompt_unsupported,  # as peftbench's prompt_tuning and p_tuning
    "P_TUNING": input_prompt_unsupported,
}
"""Tuners that serve only some models, by ``PeftType`` value: why not this one (its
``ModelInfo``), or ``None``."""

NOT_HYPERPARAMETERS: dict[str, str] = {
    **dict.fromkeys(
        ("peft_type", "auto_mapping", "base_model_name_or_path", "revision", "peft_version"),
        "peft's bookkeeping",
    ),
    "task_type": "set by peftbench from the task's head (classifier or causal LM)",
    "inference_mode": "set by peft when an adapter is loaded for inference",
    **dict.fromkeys(
        ("token_dim", "num_transformer_submodules", "num_attention_heads", "num_layers"),
        "read from the model's config by peft",
    ),
    "modules_to_save": "the task head is the harness's (peft's task models train a copy)",
    "exclude_modules": "set by peftbench to the task head",
    **dict.fromkeys(
        ("megatron_config", "megatron_core"),
        "Megatron-LM parallel layers, which peftbench does not load",
    ),
    **dict.fromkeys(
        ("tokenizer_name_or_path", "tokenizer_kwargs"),
        "a method sees the model, not its tokenizer (text initialisations are refused by peft)",
    ),
    "progressbar": "console output",
    "total_step": "the run's steps (peftbench sets it)",
}
"""Config fields that are not hyperparameters of a run, with the reason."""

FIELD_DEFAULTS: dict[str, tuple[Any, str]] = {
    "num_virtual_tokens": (20, "peft requires it; 20 as peftbench's prompt_tuning"),
    "encoder_hidden_size": (128, "peft requires it for its encoders; 128 as peftbench's p_tuning"),
    "adapter_len": (10, "peft requires it; 10 as the LLaMA-Adapter paper"),
}
"""Defaults where peft's field has none (``None``) but its tuner requires a value."""

APPLY_DEFAULTS: dict[str, str] = {
    "adapter_layers": "null: every layer of the model",
    "token_indices": "[]: the model's special tokens (bos, eos, pad, ...), as peft's own "
    "benchmark trains sos+eos",
}
"""Fields whose peftbench default depends on the model, and what it is."""

PAPER_LINK = re.compile(
    r"https?://(?:arxiv\.org|huggingface\.co/papers|aclanthology\.org|openreview\.net)/"
    r"\S*?(?=[\s)\]>`'\",]|\.(?:\s|$)|$)"
)
NORM_LAYERS = "every normalisation layer"
"""``auto``'s fallback for LayerNorm tuning, in words for the help (:meth:`PeftTuner.targets`
finds the layers with :func:`norm_module_names`)."""
MODEL_DECIDES = "<module names found in the model>"
"""What :meth:`PeftTuner.check_hparams` gives a config for ``target_modules`` that the model
decides (``apply`` gives the module names it finds)."""
SPECIAL_TOKENS = ("bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "cls_token_id")


def norm_module_names(model: Any) -> list[str]:
    """Every LayerNorm or RMSNorm module of ``model`` (by class name: transformers defines an
    RMSNorm class per architecture), by full name."""
    return [
        name
        for name, module in model.named_modules()
        if name and type(module).__name__.endswith(("LayerNorm", "RMSNorm"))
    ]


@cache
def peft_types() -> tuple[str, ...]:
    """The ``PeftType`` values of the installed peft (none without peft). peft is imported
    only if it already is: its import takes seconds (torch's included), while listing the
    methods must not; its enum module needs only the standard library."""
    if "peft" not in sys.modules:
        spec = importlib.util.find_spec("peft")
        if spec is None or not spec.submodule_search_locations:
            return ()
        path = Path(spec.submodule_search_locations[0], "utils", "peft_types.py")
        enum_spec = importlib.util.spec_from_file_location("_peftbench_peft_types", path)
        try:
            module = importlib.util.module_from_spec(enum_spec)
            enum_spec.loader.exec_module(module)
            return tuple(t.value for t in module.PeftType)
        except (OSError, AttributeError, ImportError):
            pass  # laid out otherwise: import peft itself
    from peft import PeftType

    return tuple(t.value for t in PeftType)


def tuner_names() -> list[str]:
    return [PREFIX + value.lower() for value in peft_types()]


@cache
def trials() -> dict[str, dict[str, str]]:
    """:data:`TRIALS` by tuner name, then by model and head: the run's status, then whether
    it merges (``ok, merges``) or its message (``refused: ...``)."""
    found: dict[str, dict[str, str]] = {}
    if TRIALS.exists():
        with TRIALS.open(newline="") as handle:
            for row in csv.DictReader(handle):
                detail = row["merge"] or row["message"]
                outcome = row["status"] + (f", {detail}" if row["merge"] else f": {detail}")
                found.setdefault(row["method"], {})[f"{row['model']} ({row['head']})"] = (
                    outcome if detail else row["status"]
                )
    return found


def peft_version() -> str:
    try:
        return version("peft")
    except PackageNotFoundError:
        return "not installed"


def field_param(field: dataclasses.Field, hint: Any) -> HParam | None:
    """``field`` of a peft config as a hyperparameter, or ``None`` for a nested configuration
    object (a class peftbench cannot give from a config file)."""
    default = field.default
    if default is dataclasses.MISSING:
        default = (
            field.default_factory() if field.default_factory is not dataclasses.MISSING else None
        )
    if isinstance(default, enum.Enum):
        default = default.value
    members = typing.get_args(hint) if _is_union(hint) else (hint,)
    nullable = type(None) in members or default is None
    members = tuple(m for m in members if m is not type(None))
    choices: tuple[Any, ...] | None = None
    kind: type
    if not all(_plain(m) for m in members):
        return None
    named = [m for m in members if m is not str]  # str beside a literal or an enum: its values
    literals = [
        v for m in named if typing.get_origin(m) is typing.Literal for v in typing.get_args(m)
    ]
    literals += [
        v.value for m in named if isinstance(m, type) and issubclass(m, enum.Enum) for v in m
    ]
    if len(members) == 1 and members[0] in (bool, int, float, str):
        kind = members[0]
    elif (
        named and all(_categorical(m) for m in named) and all(isinstance(v, str) for v in literals)
    ):
        kind, choices = str, tuple(literals)
    else:
        kind = object
    if kind is float and isinstance(default, int) and not isinstance(default, bool):
        default = float(default)
    if default is not None and kind is not object and not isinstance(default, kind):
        kind = object  # a default of another type than the field's: any JSON value, peft checks
    meaning = field.metadata.get("help") or "(peft gives no meaning)"
    if not isinstance(meaning, str):  # a few of peft's help texts are tuples of lines
        meaning = " ".join(map(str, meaning))
    if field.name in FIELD_DEFAULTS and default is None:
        default, why = FIELD_DEFAULTS[field.name]
        meaning = f"{meaning} [peftbench default: {why}]"
    if field.name in APPLY_DEFAULTS:
        meaning = f"{meaning} [peftbench default {APPLY_DEFAULTS[field.name]}]"
    return HParam(default, " ".join(meaning.split()), choices=choices, type=kind, nullable=nullable)


def _categorical(hint: Any) -> bool:
    return typing.get_origin(hint) is typing.Literal or (
        isinstance(hint, type) and issubclass(hint, enum.Enum)
    )


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _plain(hint: Any) -> bool:
    """Whether values of ``hint`` are plain data: scalars, literals, enums, lists, mappings."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return True
    if origin in (list, dict, tuple):
        return all(_plain(a) for a in typing.get_args(hint) if a is not Ellipsis)
    if _is_union(hint):
        return all(_plain(a) for a in typing.get_args(hint))
    return hint in (bool, int, float, str, list, dict, type(None)) or (
        isinstance(hint, type) and issubclass(hint, enum.Enum)
    )


class PeftTuner(PeftMethod):
    """One peft tuner, built from its config class when first used (listing needs only its
    name). Prompt-learning tuners get what peftbench's own prompt methods do
    (:class:`~peftbench.methods._peft.PromptMethod`'s artifact, no merge, prompts batched by
    length when generating)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.peft_type = name.removeprefix(PREFIX).upper()
        self.refused = REFUSED.get(self.peft_type)
        self.description = f"peft's {self.peft_type} tuner (peft {peft_version()})" + (
            f"; refused: {self.refused}" if self.refused else ""
        )

    @cached_property
    def config_class(self) -> type:
        from peft import PeftType
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

        return PEFT_TYPE_TO_CONFIG_MAPPING[PeftType(self.peft_type)]

    @cached_property
    def tuner_class(self) -> type:
        from peft import PeftType
        from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

        return PEFT_TYPE_TO_TUNER_MAPPING[PeftType(self.peft_type)]

    @cached_property
    def prompt_learning(self) -> bool:
        from peft.config import PromptLearningConfig

        return issubclass(self.config_class, PromptLearningConfig)

    @property
    def equal_length_batches(self) -> bool:  # every prompt tuner, to be safe: costs only speed
        return self.prompt_learning

    @cached_property
    def fields(self) -> dict[str, dataclasses.Field]:
        """The config's fields that are hyperparameters, by name."""
        return {
            f.name: f
            for f in dataclasses.fields(self.config_class)
            if f.name not in NOT_HYPERPARAMETERS and f.name in self.hyperparameters
        }

    @cached_property
    def hyperparameters(self) -> dict[str, HParam]:
        hints = typing.get_type_hints(self.config_class)
        declared = {"lr": learning_rate(LR)}
        for field in dataclasses.fields(self.config_class):
            if field.name in NOT_HYPERPARAMETERS:
                continue
            if field.name == "target_modules":
                declared[field.name] = self.target_modules_param()
                continue
            param = field_param(field, hints.get(field.name, field.type))
            if param is not None:
                declared[field.name] = param
        return declared

    @cached_property
    def default_targets(self) -> dict[str, Any] | None:
        """peft's default ``target_modules`` by model type, or ``None`` when the tuner picks
        its own (no mapping, or an empty one: ShadowPEFT wraps every decoder block)."""
        mapping = getattr(self.tuner_class, "target_module_mapping", None)
        return mapping if isinstance(mapping, dict) and mapping else None

    @cached_property
    def single_target(self) -> bool:
        """Whether ``target_modules`` is one module name (adaption prompt's attention module),
        not a list of them."""
        hints = typing.get_type_hints(self.config_class)
        return hints.get("target_modules") is str

    @property
    def fallback_targets(self) -> str:
        """What ``auto`` adapts on a model type peft has no default for: every normalisation
        layer for LayerNorm tuning (the layers it tunes), every linear layer otherwise."""
        return NORM_LAYERS if self.peft_type == "LN_TUNING" else "all-linear"

    def target_modules_param(self) -> HParam:
        if self.single_target:
            return HParam(
                "auto", "module to adapt, by name; auto: peft's default for the model type"
            )
        if self.default_targets is None:
            auto = "what the tuner picks itself (peft refuses a model it picks none for)"
        else:
            known = sorted(self.default_targets)
            auto = (
                f"peft's default for the model type where peft has one ({len(known)} types: "
                f"{', '.join(known[:4])}, ...), else {self.fallback_targets}"
            )
        return HParam("auto", f"{TARGET_MODULES_HELP}; auto: {auto}")

    @cached_property
    def paper(self) -> str:
        """The first paper link in the docstrings of peft's tuner and config classes."""
        for cls in (self.tuner_class, self.config_class):
            found = PAPER_LINK.search(cls.__doc__ or "")
            if found:
                return f"{found.group(0)} (linked from peft's {cls.__name__})"
        return f"none linked from peft's {self.config_class.__name__}"

    @cached_property
    def family(self) -> str:
        from peft import LoraConfig
        from peft.tuners.lycoris_utils import LycorisConfig
        from peft.tuners.tuners_utils import BaseTuner

        if self.prompt_learning:
            return "prompt"
        if issubclass(self.config_class, LoraConfig):
            return "low-rank"
        if issubclass(self.config_class, LycorisConfig):
            return "LyCORIS (low-rank products)"
        if issubclass(self.tuner_class, BaseTuner):
            return "weight tuner"
        return "own modules"  # neither prompt learning nor tuner layers (LLaMA-Adapter)

    @property
    def rank_rule(self) -> str:
        return rank_rule(self.peft_type)

    @property
    def tried(self) -> dict[str, str]:
        """What a 3-step run on each trial model gave (:data:`TRIALS`)."""
        return trials().get(self.name, {})

    def check_hparams(self, hp):
        """The declared choices, the refusal, then peft's own config checks (the config built
        from the values, without a model: what needs one is checked on the meta build)."""
        problems = super().check_hparams(hp)
        if self.refused:
            problems.append(f"cannot run in peftbench: {self.refused}")
        if problems:
            return problems
        kwargs = self.config_kwargs(hp)
        if not self.single_target and kwargs.get("target_modules") in (None, "all-linear"):
            if self.default_targets is not None or kwargs.get("target_modules"):
                kwargs["target_modules"] = [MODEL_DECIDES]  # names of the model's modules
        from peft import TaskType

        error: Exception | None = None
        for task in (None, TaskType.SEQ_CLS, TaskType.CAUSAL_LM):  # the head decides: any
            try:
                self.config_class(**kwargs, task_type=task)
                return []
            except Exception as refused:  # peft raises ValueError, TypeError, ImportError, ...
                error = refused  # the last: with the task type a tuner insists on
        return [self.config_problem(hp, error)]

    def config_problem(self, hp: dict[str, Any], error: Exception) -> str:
        """peft's refusal of the config, naming the values it concerns (those whose names
        its message mentions, else every value that differs from its default)."""
        changed = {
            key: hp[key]
            for key, declared in self.hyperparameters.items()
            if key != "lr" and hp[key] != declared.default
        }
        named = {k: v for k, v in changed.items() if k in str(error)} or changed
        values = ", ".join(f"{k}={v!r}" for k, v in named.items()) or "the defaults"
        message = f"{type(error).__name__}: {error}".strip()
        return f"{values}: peft's {self.config_class.__name__} refuses it ({message})"

    def config_kwargs(self, hp: dict[str, Any]) -> dict[str, Any]:
        """The config's arguments from ``hp``, before the model is known."""
        kwargs = {key: hp[key] for key in self.fields}
        if "target_modules" in kwargs:
            value = hp["target_modules"]
            kwargs["target_modules"] = (
                None if value == "auto" else value if self.single_target else target_modules(value)
            )
        if "total_step" in {f.name for f in dataclasses.fields(self.config_class)}:
            kwargs["total_step"] = hp["steps"]
        return kwargs

    def unsupported_reason(self, info):
        if self.refused:
            return f"{self.name}: {self.refused}"
        refused_on = REFUSED_ON.get(self.peft_type)
        return None if refused_on is None else refused_on(info)

    def apply(self, model, hp, info):
        self._model = model  # peft_config resolves targets and model defaults against it
        try:
            return super().apply(model, hp, info)
        finally:
            del self._model

    def peft_config(self, hp, info):
        model = self._model
        kwargs = self.config_kwargs(hp)
        names = {f.name for f in dataclasses.fields(self.config_class)}
        if "target_modules" in kwargs and not self.single_target:
            kwargs["target_modules"] = self.targets(kwargs["target_modules"], model, info)
        if "exclude_modules" in names:
            kwargs["exclude_modules"] = list(info.head_prefixes)
        if "task_type" in names:
            kwargs["task_type"] = task_type(info)
        if kwargs.get("adapter_layers", 0) is None:
            kwargs["adapter_layers"] = info.num_layers
        if kwargs.get("token_indices") == []:
            kwargs["token_indices"] = sorted(
                {i for k in SPECIAL_TOKENS if isinstance(i := getattr(model.config, k, None), int)}
            )
        return self.config_class(**kwargs)

    def targets(self, names: list[str] | str | None, model, info) -> list[str] | None:
        """``target_modules`` as full module names outside the task head: for ``names``
        ``None``, peft's default for the model type, or where peft has none every normalisation
        layer (LN tuning) or every linear layer; else ``names`` (every linear layer for
        ``all-linear``). ``None`` where the tuner picks its own."""
        from peftbench.plugin.method import linear_module_names

        if names is None:
            if self.default_targets is None:
                return None
            names = self.default_targets.get(info.model_type) or self.fallback_targets
            if names == NORM_LAYERS:  # auto's own fallback, never a user's value
                names = norm_module_names(model)
        if names == "all-linear" or names == ["all-linear"]:
            names = linear_module_names(model, info)
        found = [
            full
            for full, _ in model.named_modules()
            if full
            and not is_head(full, info)
            and any(full == n or full.endswith("." + n) for n in names)
        ]
        if not found:
            raise ValueError(f"target_modules {names} match no module outside the task head")
        return found

    def on_step(self, model, step):
        """Tuners that reallocate a budget while training (AdaLoRA, AdaMSS) do it here."""
        allocate = getattr(model.base_model, "update_and_allocate", None)
        if callable(allocate):
            allocate(step)

    def artifact(self, model, info):
        """As peft's other methods (prompt tuners: the prompt as the model uses it), a tensor
        tied to another one stored once (trainable tokens on tied input and output embeddings
        train one delta, which peft's state dict names twice)."""
        if self.prompt_learning:
            return PromptMethod.artifact(self, model, info)
        tensors = super().artifact(model, info)
        first: dict[Any, str] = {}
        for name, t in tensors.items():
            first.setdefault((t.untyped_storage()._cdata, t.storage_offset(), t.shape), name)
        return {name: tensors[name] for name in first.values()}

    def load_artifact(self, model, tensors, info):
        if not self.prompt_learning:
            return super().load_artifact(model, tensors, info)
        encoder = model.prompt_encoder[model.active_adapter]
        if hasattr(encoder, "load_prompt_embeddings"):  # an encoder that loads its own (CARTRIDGE)
            (prompt,) = tensors.values()
            return encoder.load_prompt_embeddings(prompt)
        return PromptMethod.load_artifact(self, model, tensors, info)

    def merge(self, model):
        """As peft's other methods, and ``None`` (the modules stay) where peft refuses to merge
        this model's layers (BEFT's bias on a layer without one)."""
        if self.prompt_learning:
            return PromptMethod.merge(self, model)
        try:
            return super().merge(model)
        except (ValueError, NotImplementedError) as error:
            log.info("%s keeps its modules: peft does not merge them (%s)", self.name, error)
            return None


METHODS.add_provider(tuner_names, PeftTuner)
