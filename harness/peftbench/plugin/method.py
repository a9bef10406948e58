"""The interface every PEFT method plugin implements."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from torch import nn

    from peftbench.plugin.model import ModelInfo


class Method:
    """A PEFT method: how to turn a task model into the model that is trained.

    Subclasses set the class attributes and implement :meth:`apply`. The harness owns the task
    head (it is always trained and stored) and everything else: data, training, measurement.
    """

    name: str = ""
    description: str = ""
    paper: str = ""
    defaults: dict[str, Any] = {}  # noqa: RUF012 - read-only class data
    """Method hyperparameters and their defaults (``lr`` included: methods differ by orders of
    magnitude). Their types are the types of the defaults; ``--set`` values are parsed to them."""
    hparam_help: dict[str, str] = {}  # noqa: RUF012 - read-only class data
    """One line per key of :attr:`defaults` saying what it means (``peftbench list hparams``)."""
    lr_range: tuple[float, float] = (1e-5, 1e-3)
    """Learning-rate range the paper recommends, for sweeps."""
    trains_base_weights: bool = False
    """Whether the method updates pretrained weight matrices in place (full fine-tuning,
    freezing): impossible on a quantized base (precision int8/nf4)."""
    architectures: tuple[str, ...] | None = None
    """``model_type`` values supported (``None``: any)."""

    hparam_choices: dict[str, tuple[Any, ...]] = {}  # noqa: RUF012 - read-only class data
    """The valid values of categorical hyperparameters (checked by :meth:`check_hparams`)."""
    hparam_bounds: dict[str, tuple[float, float]] = {}  # noqa: RUF012 - read-only class data
    """Inclusive ``(low, high)`` ranges of numeric hyperparameters (``math.inf``: unbounded)."""

    def check_hparams(self, hp: dict[str, Any]) -> list[str]:
        """Problems with the method's own hyperparameter values, each naming the value and what
        is valid; checked at plan time, before any job. Default: :attr:`hparam_choices` and
        :attr:`hparam_bounds`; override to add checks that relate several values."""
        problems = [
            f"{key}={hp[key]!r}; valid: {', '.join(map(str, allowed))}"
            for key, allowed in self.hparam_choices.items()
            if hp[key] not in allowed
        ]
        problems += [
            f"{key}={hp[key]!r}: must be between {low} and {high}"
            for key, (low, high) in self.hparam_bounds.items()
            if not low <= hp[key] <= high
        ]
        return problems

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
