"""The interface every model plugin implements, and what the harness knows about a model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftbench.plugin.task import Head

if TYPE_CHECKING:
    from torch import nn
    from transformers import PretrainedConfig, PreTrainedTokenizerBase


@dataclass(frozen=True)
class ModelInfo:
    """Facts about a loaded model that methods may depend on."""

    name: str
    model_type: str
    num_layers: int
    hidden_size: int
    head_prefixes: tuple[str, ...]
    """Module paths of the task head: what lies outside the backbone, plus backbone modules the
    checkpoint did not provide (newly initialised for the task)."""
    has_bias: bool
    """Whether the backbone (head excluded) has bias terms."""
    head: Head = Head.CLASSIFICATION
    """A sequence classifier on the backbone, or the pretrained language-model head
    (:class:`peftbench.plugin.task.Head`)."""
    pooling: str | None = None
    """What a classifier reads (:data:`~.pooling.POOLINGS`): ``cls``, transformers' own
    input, or ``mean``, the mean of the unpadded positions; ``None`` for a language-model head."""


@dataclass
class LoadedModel:
    model: nn.Module
    info: ModelInfo
    fingerprint: str
    """Content hash of the pretrained weights (``"config-only"`` when built without weights)."""


class ModelSource:
    """Where a pretrained model comes from and how to build its task model."""

    name: str = ""
    description: str = ""
    tokenizer_key: str = ""
    """Models that share a tokenizer share one tokenized copy of each task."""
    matrix_columns: tuple[tuple[str, Head], ...] = ()
    """The columns this model stands for in docs/methods.md's method × architecture matrix, a
    (label, task head) pair each, e.g. ``(("Llama", Head.CLASSIFICATION), ("Llama LM",
    Head.CAUSAL_LM))``; one configuration per architecture declares them (none: no column)."""

    def config(self, **overrides: Any) -> PretrainedConfig:
        raise NotImplementedError

    def pooling(self) -> str:
        """What this model's sequence classifier reads (:data:`~.pooling.POOLINGS`)."""
        return "cls"

    def tokenizer(self) -> PreTrainedTokenizerBase:
        raise NotImplementedError

    def load(
        self, num_labels: int, head: Head = Head.CLASSIFICATION, dtype: str = "float32"
    ) -> LoadedModel:
        """The pretrained model for a task posed as ``head`` (:class:`peftbench.plugin.task.Head`):
        with a freshly initialised ``num_labels``-way classifier, or its language-model head;
        its floating-point parameters in ``dtype`` (:data:`LOAD_DTYPES`), whatever the
        checkpoint stores."""
        raise NotImplementedError

    def build_empty(self, num_labels: int, head: Head = Head.CLASSIFICATION) -> LoadedModel:
        """The same task model on the meta device: structure without weights (for counting)."""
        import torch

        config = self.config(**head_config(head, num_labels))
        with torch.device("meta"):
            model = auto_class(head).from_config(config)
        pooling = self.pooling() if Head.of(head) == Head.CLASSIFICATION else None
        info = model_info(self.name, model, head=head, pooling=pooling)
        return LoadedModel(model, info, "config-only")


LOAD_DTYPES = ("float32", "bfloat16", "float16")
"""Parameter dtypes a model may be loaded in. Every precision loads float32: mixed precision
keeps float32 master weights (fp16's grad scaler refuses float16 parameters), and quantized
bases quantize from, and compute in, float32."""


def torch_dtype(dtype: str) -> Any:
    """The ``torch.dtype`` named ``dtype``, one of :data:`LOAD_DTYPES`."""
    import torch

    if dtype not in LOAD_DTYPES:
        raise ValueError(f"dtype={dtype!r}; valid: {', '.join(LOAD_DTYPES)}")
    return getattr(torch, dtype)


def dtype_argument(dtype: str) -> dict[str, Any]:
    """The keyword ``from_pretrained``/``from_config`` take the dtype by: ``dtype`` from
    transformers 4.56 (``torch_dtype``, its old name, warns in 5), ``torch_dtype`` before."""
    import transformers
    from packaging.version import Version

    name = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    return {name: torch_dtype(dtype)}


def head_config(head: str, num_labels: int) -> dict[str, Any]:
    """Config overrides for ``head``: a classifier's label count; nothing for an LM head."""
    return {"num_labels": num_labels} if head == Head.CLASSIFICATION else {}


def auto_class(head: str) -> Any:
    """The ``transformers`` auto class that builds a model for ``head``."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    classes = {
        Head.CLASSIFICATION: AutoModelForSequenceClassification,
        Head.CAUSAL_LM: AutoModelForCausalLM,
        Head.GENERATION: AutoModelForCausalLM,
    }
    return classes[Head.of(head)]


def model_info(
    name: str,
    model: nn.Module,
    newly_initialised: list[str] | None = None,
    head: Head = Head.CLASSIFICATION,
    pooling: str | None = "cls",
) -> ModelInfo:
    """Describe ``model``. The task head is what the checkpoint did not provide
    (``newly_initialised``, from ``from_pretrained``'s loading info) plus, for a classifier,
    what lies outside the backbone; a language-model head is pretrained, not a task head."""
    config = model.config
    prefix = model.base_model_prefix
    heads = set()
    if head == Head.CLASSIFICATION:
        heads = {
            n.split(".")[0] for n, _ in model.named_parameters() if not n.startswith(prefix + ".")
        }
    heads.update(
        m for m in newly_initialised or [] if not any(m.startswith(h + ".") for h in heads)
    )
    return ModelInfo(
        name=name,
        model_type=config.model_type,
        num_layers=config.num_hidden_layers,
        hidden_size=config.hidden_size,
        head_prefixes=tuple(sorted(heads)),
        has_bias=any(
            n.endswith(".bias") and n.startswith(prefix + ".") for n, _ in model.named_parameters()
        ),
        head=Head.of(head),
        pooling=pooling if head == Head.CLASSIFICATION else None,
    )


class TransformersModel(ModelSource):
    """A model that ``transformers`` loads from a local folder or a hub id.

    ``config_overrides`` change the architecture at load time; for example
    ``{"num_hidden_layers": 2}`` keeps the first two pretrained layers. ``pooling`` is what a
    classifier reads (:data:`peftbench.plugin.pooling.POOLINGS`); ``None`` takes what a
    sentence-transformers folder declares, else ``cls``. Remote code is never trusted unless
    ``trust_remote_code`` is set explicitly.
    """

    def __init__(
        self,
        location: str,
        description: str = "",
        tokenizer_key: str | None = None,
        config_overrides: dict[str, Any] | None = None,
        trust_remote_code: bool = False,
        pooling: str | None = None,
    ) -> None:
        from peftbench.plugin.pooling import POOLINGS

        if pooling is not None and pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r}; valid: {', '.join(POOLINGS)}")
        self._pooling = pooling
        self.location = location
        self.description = description or f"{location} (transformers)"
        self.tokenizer_key = tokenizer_key or location.replace("/", "--")
        self.config_overrides = dict(config_overrides or {})
        self.trust_remote_code = trust_remote_code

    def path(self) -> str:
        return self.location

    def pooling(self) -> str:
        """What this model's classifier reads: the one given, else the folder's declaration
        (sentence-transformers' pooling config), else ``cls``."""
        from peftbench.plugin.pooling import sentence_transformers_pooling

        if self._pooling is None:
            path = Path(self.path())
            self._pooling = (path.is_dir() and sentence_transformers_pooling(path)) or "cls"
        return self._pooling

    def config(self, **overrides: Any) -> PretrainedConfig:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(
            self.path(),
            trust_remote_code=self.trust_remote_code,
            **self.config_overrides,
            **overrides,
        )

    def tokenizer(self) -> PreTrainedTokenizerBase:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.path(), trust_remote_code=self.trust_remote_code)

    def load(
        self, num_labels: int, head: Head = Head.CLASSIFICATION, dtype: str = "float32"
    ) -> LoadedModel:
        # transformers 5 would load the checkpoint's stored dtype (its "auto"): pinned instead.
        model, loading = auto_class(head).from_pretrained(
            self.path(),
            config=self.config(**head_config(head, num_labels)),
            use_safetensors=True,
            trust_remote_code=self.trust_remote_code,
            output_loading_info=True,
            **dtype_argument(dtype),
        )
        fresh = sorted({key.rsplit(".", 1)[0] for key in loading["missing_keys"]})
        pooling = self.pooling()
        if head == Head.CLASSIFICATION and pooling == "mean":
            from peftbench.plugin.pooling import pool_by_mean

            pool_by_mean(model)
        info = model_info(self.name, model, fresh, head, pooling)
        return LoadedModel(model, info, weights_fingerprint(model))


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 over the backbone's parameter names, shapes, dtypes and values."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.base_model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch_uint8()).numpy())
    return "sha256:" + digest.hexdigest()


def torch_uint8() -> Any:
    import torch

    return torch.uint8
