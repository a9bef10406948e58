"""The interface every PEFT method plugin implements."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from peftbench.plugin.errors import SpecError

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from torch import nn

    from peftbench.plugin.model import ModelInfo

NULL = "null"
"""What ``--set key=null`` means for a hyperparameter that may be null (:attr:`HParam.nullable`)."""
TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")


@dataclass(frozen=True)
class HParam:
    """One hyperparameter of a method, declared once: its default, what it means and which
    values are valid (as peft's config dataclasses carry ``metadata={"help": ...}`` on each
    field). ``peftbench list hparams METHOD`` shows it; :meth:`parse` and :meth:`problems` check
    every value at plan time."""

    default: Any
    help: str
    """One line saying what it means."""
    bounds: tuple[float, float] | None = None
    """Inclusive ``(low, high)`` range of a numeric value (``math.inf``: unbounded)."""
    choices: tuple[Any, ...] | None = None
    """The valid values of a categorical one."""
    type: type | None = None
    """``bool``, ``int``, ``float``, ``str``, or ``object`` for any JSON value (lists, mappings,
    unions: given as JSON text on the command line); ``None``: the type of :attr:`default`."""
    nullable: bool = False
    """Whether null (``None``; ``null`` on the command line) is valid too."""

    @property
    def kind(self) -> type:
        """The type values are parsed to."""
        return self.type or type(self.default)

    @property
    def type_name(self) -> str:
        """``int``, ``float|null``, ``json``, ... (``peftbench list hparams``)."""
        name = "json" if self.kind is object else self.kind.__name__
        return f"{name}|null" if self.nullable and self.kind is not object else name

    def parse(self, key: str, raw: Any) -> Any:
        """``raw`` (from a config file, a spec, or ``--set key=value`` text) as this type; raises
        :class:`~peftbench.plugin.errors.SpecError` naming the value otherwise."""
        kind = self.kind
        if self.nullable and (raw is None or raw == NULL):
            return None
        if kind is object:
            return _json_value(key, raw)
        if isinstance(raw, kind) and not (kind is int and isinstance(raw, bool)):
            return raw
        if kind is bool:
            text = str(raw).strip().lower()
            if text in TRUE or text in FALSE:
                return text in TRUE
            raise SpecError(f"{key}={raw!r}: expected a boolean (true/false)")
        if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
            return float(raw)
        if kind in (int, float) and isinstance(raw, str):
            try:
                return kind(raw)
            except ValueError:
                pass
        if kind is str and isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return str(raw)
        null = " or null" if self.nullable else ""
        article = "an" if kind is int else "a"
        raise SpecError(
            f"{key}={raw!r}: expected {article} {kind.__name__}{null} "
            f"(like the default {self.default!r})"
        )

    def problems(self, key: str, value: Any) -> list[str]:
        """What is wrong with a parsed ``value``: not among :attr:`choices`, outside
        :attr:`bounds` (NaN included); each problem names the value and what is valid."""
        if value is None and self.nullable:
            return []
        if self.choices is not None and value not in self.choices:
            return [f"{key}={value!r}; valid: {', '.join(map(str, self.choices))}"]
        if self.bounds is not None:
            low, high = self.bounds
            if not low <= value <= high:
                return [f"{key}={value!r}: must be between {low} and {high}"]
        return []

    def with_default(self, default: Any) -> HParam:
        """The same declaration with another default (a preset of another method)."""
        return replace(self, default=default)


def _json_value(key: str, raw: Any) -> Any:
    """A JSON value: ``raw`` itself, or the JSON that text holds (text that is not JSON stays
    text, so ``--set layers_pattern=layers`` works unquoted)."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    try:
        json.dumps(raw, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise SpecError(f"{key}={raw!r}: expected a JSON value ({error})") from None
    return raw


LR_HELP = "AdamW learning rate (the task head's too, unless head_lr is set)"


def learning_rate(default: float) -> HParam:
    """The ``lr`` every method declares, with the method's own default (methods differ by
    orders of magnitude)."""
    return HParam(default, LR_HELP)


AT_LEAST_ONE = (1, math.inf)
""":attr:`HParam.bounds` of a count (a rank, a width, a length)."""
NON_NEGATIVE = (0, math.inf)
UNIT = (0, 1)
""":attr:`HParam.bounds` of a fraction or a probability."""


class Method:
    """A PEFT method: how to turn a task model into the model that is trained.

    Subclasses set the class attributes and implement :meth:`apply`. The harness owns the task
    head (it is always trained and stored) and everything else: data, training, measurement.
    """

    name: str = ""
    description: str = ""
    paper: str = ""
    hyperparameters: dict[str, HParam] = {}  # noqa: RUF012 - read-only class data
    """The method's hyperparameters by name, ``lr`` included (methods differ by orders of
    magnitude): each declared once, with its default, type, meaning and valid values."""
    lr_range: tuple[float, float] = (1e-5, 1e-3)
    """Learning-rate range the paper recommends, for sweeps."""
    trains_base_weights: bool = False
    """Whether the method updates pretrained weight matrices in place (full fine-tuning,
    freezing): impossible on a quantized base (precision int8/nf4)."""
    architectures: tuple[str, ...] | None = None
    """``model_type`` values supported (``None``: any)."""
    family: str = ""
    """The kind of method, for docs/methods.md (low-rank, adapter, prompt, selective, ...)."""
    rank_rule: str = ""
    """What bounds the rank of the update to a weight matrix, in words (docs/methods.md)."""
    tried: dict[str, str] = {}  # noqa: RUF012 - read-only class data
    """Outcomes of short trial runs, by model and head (``"tiny-llama (causal LM)": "ok,
    merges"``), where the method has them (``peftbench list methods``, docs/methods.md)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        old = [a for a in ("defaults", "hparam_help", "hparam_bounds", "hparam_choices")
               if a in cls.__dict__]  # fmt: skip
        if old:
            raise TypeError(
                f"{cls.__name__}: {', '.join(old)} are gone; declare each hyperparameter once: "
                "hyperparameters = {'r': HParam(8, 'rank of the update', bounds=(1, math.inf))}"
            )

    @property
    def defaults(self) -> dict[str, Any]:
        """Each hyperparameter's default, by name."""
        return {key: h.default for key, h in self.hyperparameters.items()}

    def check_hparams(self, hp: dict[str, Any]) -> list[str]:
        """Problems with the method's own hyperparameter values, each naming the value and what
        is valid; checked at plan time, before any job. Default: each declaration's choices and
        bounds (:meth:`HParam.problems`); override to add checks that relate several values."""
        return [
            problem
            for key, declared in self.hyperparameters.items()
            for problem in declared.problems(key, hp[key])
        ]

    def unsupported_reason(self, info: ModelInfo) -> str | None:
        """Why this method cannot apply to the model, or ``None`` when it can."""
        if self.architectures is not None and info.model_type not in self.architectures:
            return (
                f"{self.name} supports model types {', '.join(self.architectures)}, "
                f"not {info.model_type!r}"
            )
        return None

    def apply(self, model: nn.Module, hp: dict[str, Any], info: ModelInfo) -> nn.Module:
        """Return the model to train, with ``requires_grad`` set on the method's parameters.

        The harness freezes nothing beforehand and unfreezes the task head afterwards.
        """
        raise NotImplementedError

    def artifact(self, model: nn.Module, info: ModelInfo) -> dict[str, torch.Tensor]:
        """The tensors that must be stored per task to rebuild the tuned model from the base,
        the head excluded (the harness stores it). Default: every trainable non-head tensor."""
        return {
            name: p
            for name, p in model.named_parameters()
            if p.requires_grad and not self.is_head(name, info)
        }

    def load_artifact(
        self, model: nn.Module, tensors: dict[str, torch.Tensor], info: ModelInfo
    ) -> None:
        """Load what :meth:`artifact` returned into a model that :meth:`apply` just returned with
        the same hyperparameters (the head is the harness's). Default: by parameter name."""
        unexpected = model.load_state_dict(tensors, strict=False).unexpected_keys
        if unexpected:
            raise KeyError(f"{self.name}: artifact tensors the model lacks: {unexpected}")

    equal_length_batches: bool = False
    """Whether generation must batch prompts of one length only: the method's virtual tokens
    ignore position ids, so left padding would shift the prompt's positions (peft's prompt
    tuning and P-tuning on learned-position decoders)."""
    native_format: str | None = None
    """The name of the format :meth:`save_native` writes (e.g. ``"peft"``), or ``None`` when
    the method has none: its artifact is then saved as safetensors by the harness."""

    def save_native(self, model: nn.Module, info: ModelInfo, folder: Path) -> list[str]:
        """Write the trained method into ``folder`` in its library's own format
        (:attr:`native_format`; the head the harness saves beside it unless these tensors hold
        it) and return the names of the tensors written."""
        raise NotImplementedError(f"{self.name} has no native artifact format")

    def load_native(self, model: nn.Module, info: ModelInfo, folder: Path) -> nn.Module:
        """The base ``model`` with what :meth:`save_native` wrote in ``folder`` loaded."""
        raise NotImplementedError(f"{self.name} has no native artifact format")

    def on_step(self, model: nn.Module, step: int) -> None:
        """Called after every optimizer step, before the gradients are zeroed; ``step`` counts the
        optimizer steps taken (1 after the first; ``hp["steps"]`` in all). Default: nothing.
        AdaLoRA reallocates its rank budget here."""

    def merge(self, model: nn.Module) -> nn.Module | None:
        """The model to serve after folding the method into the base weights, or ``None`` when
        the method keeps its own modules at inference time. Default: the model as it is."""
        return model

    def base_name(self, key: str) -> str:
        """A parameter or state-dict key of the model :meth:`apply` returned (or of its
        artifact) as the unadapted model names it, for the tensors the method wraps or moves.
        Default: ``key`` itself (the method adapts the model in place)."""
        return key

    def is_head(self, name: str, info: ModelInfo) -> bool:
        """Whether ``name``, a parameter or state-dict key of the adapted model, belongs to the
        task head (:func:`is_head` of its :meth:`base_name`)."""
        return is_head(self.base_name(name), info)

    def is_frozen_copy(self, name: str) -> bool:
        """Whether parameter ``name`` of the adapted model is a frozen original the method keeps
        of a module whose copy it trains (the harness never unfreezes it). Default: no."""
        return False

    def update_rank_bounds(self, model: nn.Module) -> dict[int, int | str | None]:
        """The base weight matrices that the method's own modules update, as ``id(weight)`` ->
        the rank the update may reach (LoRA: r; 0: the module changes no weight, e.g. biases
        only), ``None`` when nothing bounds it below ``min(m, n)`` (IA³'s scaling), or a
        string saying why no rank can be declared (an update that depends on the input).
        Trainable weights need no entry (their bound is ``min(m, n)``). Default: none; a
        weight the method's modules wrap without an entry has its rank measured only on real
        weights (docs/parameters.md)."""
        return {}

    def optimizer(
        self, model: nn.Module, hp: dict[str, Any], param_groups: list[dict[str, Any]]
    ) -> torch.optim.Optimizer | None:
        """The optimizer that trains ``model`` (what :meth:`apply` returned, head unfrozen), or
        ``None`` for the harness's AdamW over ``param_groups`` (the trainable parameters, the
        head at ``head_lr`` when set) at ``hp["lr"]`` and ``hp["weight_decay"]``. For a method
        that prescribes its own (LoRA+, LoRA-FA). Default: ``None``."""
        return None


def is_head(name: str, info: ModelInfo) -> bool:
    """Whether the parameter, module or state-dict key ``name`` of the unadapted task model
    belongs to the task head (an adapted model's names: :meth:`Method.is_head`)."""
    return any(name == h or name.startswith(h + ".") for h in info.head_prefixes)


def unfreeze_head(model: nn.Module, info: ModelInfo, method: Method) -> None:
    """Make the task head of ``model``, what ``method`` returned, trainable: the harness always
    trains it, whatever the method."""
    for name, parameter in model.named_parameters():
        if method.is_head(name, info) and not method.is_frozen_copy(name):
            parameter.requires_grad_(True)


def linear_module_names(model: nn.Module, info: ModelInfo) -> list[str]:
    """The distinct last names of the backbone's linear layers (``query``, ``c_attn``, ...):
    the valid ``target_modules`` of methods that adapt linear layers."""
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, (nn.Linear, Conv1D)) and name and not is_head(name, info)
        }
    )
