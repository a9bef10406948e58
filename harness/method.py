"""The interface every PEFT method plugin implements."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from peftbench.model import ModelInfo


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
    lr_range: tuple[float, float] = (1e-5, 1e-3)
    """Learning-rate range the paper recommends, for sweeps."""
    trains_base_weights: bool = False
    """Whether the method updates pretrained weight matrices in place (full fine-tuning,
    freezing): impossible on a quantized base (precision int8/nf4)."""
    architectures: tuple[str, ...] | None = None
    """``model_type`` values supported (``None``: any)."""

    def check_hparams(self, hp: dict[str, Any]) -> list[str]:
        """Problems with the method's own hyperparameter values (choices, ranges), each naming
        the value and what is valid; checked at plan time, before any job. Default: none."""
        return []

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
            if p.requires_grad and not is_head(name, info)
        }

    def load_artifact(
        self, model: nn.Module, tensors: dict[str, torch.Tensor], info: ModelInfo
    ) -> None:
        """Load what :meth:`artifact` returned into a model that :meth:`apply` just returned with
        the same hyperparameters (the head is the harness's). Default: by parameter name."""
        unexpected = model.load_state_dict(tensors, strict=False).unexpected_keys
        if unexpected:
            raise KeyError(f"{self.name}: artifact tensors the model lacks: {unexpected}")

    def on_step(self, model: nn.Module, step: int) -> None:
        """Called after every optimizer step, before the gradients are zeroed; ``step`` counts the
        optimizer steps taken (1 after the first; ``hp["steps"]`` in all). Default: nothing.
        AdaLoRA reallocates its rank budget here."""

    def merge(self, model: nn.Module) -> nn.Module | None:
        """The model to serve after folding the method into the base weights, or ``None`` when
        the method keeps its own modules at inference time. Default: the model as it is."""
        return model


PEFT_PREFIX = "base_model.model."
PEFT_PROMPT_PREFIX = "base_model."
"""peft's prompt-learning models hold the transformers model one level less deep."""
FROZEN_COPY = ".original_module."
"""peft keeps a frozen copy of each module it trains a copy of (``modules_to_save``)."""


def is_head(name: str, info: ModelInfo) -> bool:
    """Whether the parameter or state-dict key ``name`` belongs to the task head (peft's
    ``base_model.model.`` wrapper prefix, or ``base_model.`` for prompt learning, is ignored)."""
    if name.startswith(PEFT_PREFIX):
        name = name.removeprefix(PEFT_PREFIX)
    else:
        name = name.removeprefix(PEFT_PROMPT_PREFIX)
    return any(name == h or name.startswith(h + ".") for h in info.head_prefixes)


def unfreeze_head(model: nn.Module, info: ModelInfo) -> None:
    """Make the task head trainable (the harness always trains it, whatever the method)."""
    for name, parameter in model.named_parameters():
        if is_head(name, info) and FROZEN_COPY not in name:
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
