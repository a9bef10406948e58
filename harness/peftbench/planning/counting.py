"""Parameter counts under peftbench's one standard; the definitions are in docs/parameters.md.

Usage, around a run::

    model, base = adapt(loaded.model, method, hp, info, keep_values=True)
    static = count_static(model, method, info, base)    # also works on the meta device
    ...train...
    trained = count_trained(model, method, info, base)  # stored (measured), changed, update_rank
    params = {**static, **trained}

Without weights: :func:`count_model_method` builds the task model on the meta device.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import tempfile
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import torch
from torch import nn

from peftbench.plugin.method import Method, is_head, unfreeze_head
from peftbench.plugin.model import ModelInfo

SVD_MAX_COST = 2**31
"""Largest ``m·n·min(m, n)`` of a ΔW whose rank is measured by SVD (768×3072: about a second on
one CPU core); bigger matrices report their declared rank."""

PERCENT_OF = (
    "trainable",
    "trainable_method",
    "trainable_head",
    "added",
    "added_method",
    "added_head",
    "stored",
    "inference_added",
)
"""Integer counts reported with a ``<key>_pct`` next to them."""


class NotApplicableError(ValueError):
    """The method does not apply to the model (``Method.unsupported_reason``)."""


@dataclass(frozen=True)
class BaseSnapshot:
    """The task model before the method: what every count compares against.

    ``params`` holds the parameters themselves (so identity comparisons stay valid),
    ``backbone`` the names outside the task head, ``values`` copies of the backbone's values
    (for :func:`count_trained`; ``None`` when not kept), kept on disk, not in memory, so that
    measuring does not inflate the run's memory figures.
    """

    params: dict[str, nn.Parameter]
    backbone: tuple[str, ...]
    values: Mapping[str, torch.Tensor] | None

    @property
    def total(self) -> int:
        """``base_total``: elements of the backbone's parameters."""
        return sum(numel(self.params[name]) for name in self.backbone)


def numel(tensor: torch.Tensor) -> int:
    """Logical element count: a quantized tensor counts the elements it represents."""
    return math.prod(logical_shape(tensor))


def logical_shape(tensor: torch.Tensor) -> tuple[int, ...]:
    """The shape a tensor represents (bitsandbytes 4-bit tensors store packed bytes)."""
    state = getattr(tensor, "quant_state", None)
    return tuple(state.shape if state is not None else tensor.shape)


def nbytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor really occupies in memory, quantization state included."""
    state = getattr(tensor, "quant_state", None)
    extra = state.as_dict().values() if state is not None else ()
    return sum(t.numel() * t.element_size() for t in (tensor, *extra) if torch.is_tensor(t))


def snapshot_base(model: nn.Module, info: ModelInfo, keep_values: bool = False) -> BaseSnapshot:
    """Record the task model before :meth:`Method.apply`; ``keep_values`` copies the backbone's
    values to the CPU (needed by :func:`count_trained`)."""
    params = dict(model.named_parameters())
    backbone = tuple(name for name in params if not is_head(name, info))
    values = DiskTensors({name: params[name] for name in backbone}) if keep_values else None
    return BaseSnapshot(params, backbone, values)


class DiskTensors(Mapping[str, torch.Tensor]):
    """A snapshot of tensors in a temporary safetensors file, read back one at a time (the file
    is removed when the object is collected)."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        handle, path = tempfile.mkstemp(prefix="peftbench-base-", suffix=".safetensors")
        os.close(handle)
        self.path = path
        weakref.finalize(self, os.remove, path)
        save_file({k: t.detach().to("cpu").contiguous() for k, t in tensors.items()}, path)
        self.names = tuple(tensors)

    def __getitem__(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        if name not in self.names:
            raise KeyError(name)
        with safe_open(self.path, framework="pt") as snapshot:
            return snapshot.get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def adapt(
    model: nn.Module, method: Method, hp: dict[str, Any], info: ModelInfo, keep_values: bool = False
) -> tuple[nn.Module, BaseSnapshot]:
    """Snapshot the base, apply the method and unfreeze the head, as a run does. On the meta
    device the method's new tensors are created there too (nothing is allocated)."""
    base = snapshot_base(model, info, keep_values)
    on_meta = all(p.is_meta for p in model.parameters())
    with torch.device("meta") if on_meta else contextlib.nullcontext():
        adapted = method.apply(model, hp, info)
    unfreeze_head(adapted, info, method)
    return adapted, base


def count_static(
    model: nn.Module,
    method: Method,
    info: ModelInfo,
    base: BaseSnapshot,
    inplace: bool = False,
    mergeable: bool = True,
) -> dict[str, Any]:
    """Counts that need no trained values (any device, the meta device included).

    ``model`` is what :func:`adapt` returned. The method's merge runs on a meta-device copy
    unless ``inplace`` (then ``model`` is merged and unusable after). ``changed`` is ``None``
    (it needs training) and ``update_rank`` is the declared bound.
    """
    base_ids = {id(p) for p in base.params.values()}
    params = list(model.named_parameters())
    trainable = [(n, p) for n, p in params if p.requires_grad]
    added = [(n, p) for n, p in params if id(p) not in base_ids]
    artifact = method.artifact(model, info)
    counts = {
        "base_total": base.total,
        **split_head("trainable", trainable, method, info),
        **split_head("added", added, method, info),
        **declared_size({**artifact, **head_tensors(model, method, info)}),
        "inference_added": None,
        "changed": None,
        "update_rank": summarise_ranks(declared_ranks(model, method, base), measured=None),
    }
    merged = method.merge(model if inplace else meta_copy(model)) if mergeable else None
    counts["inference_added"] = (
        backbone_elements(merged, method, info) - base.total
        if merged is not None
        else sum(
            numel(t) for key, t in artifact.items() if method.base_name(key) not in base.params
        )
    )
    return with_percentages(counts, base.total)


def count_trained(
    model: nn.Module,
    method: Method,
    info: ModelInfo,
    base: BaseSnapshot,
    svd_max_cost: int = SVD_MAX_COST,
    inplace: bool = False,
    mergeable: bool = True,
) -> dict[str, Any]:
    """Counts measured on the trained model: ``stored`` (saved and read back), ``changed``
    and ``update_rank``. ``base`` must come from ``adapt(..., keep_values=True)``. The method's
    merge runs on a copy unless ``inplace`` (then ``model`` is merged and unusable after)."""
    values = base_values(base)
    declared = declared_ranks(model, method, base)
    stored = measured_size({**method.artifact(model, info), **head_tensors(model, method, info)})
    unmerged = changed_elements(base)
    merged = method.merge(model if inplace else copy.deepcopy(model)) if mergeable else None
    after = changed_elements(base, merged) if merged is not None else None
    served = merged_params(merged) if merged is not None else base.params
    ranks, measured = {}, 0
    for name, changed in (unmerged if after is None else after).items():
        before, current = values[name], served[name]
        if not changed or before.ndim != 2:
            continue
        if svd_cost(before) <= svd_max_cost:
            ranks[name] = delta_rank(before, current)
            measured += 1
        else:
            ranks[name] = declared.get(name, min(before.shape))
    counts = {
        **stored,
        "changed": {
            "unmerged": sum(unmerged.values()),
            "merged": sum(after.values()) if after is not None else None,
        },
        "update_rank": summarise_ranks(ranks, measured),
    }
    return with_percentages(counts, base.total)


def count_model_method(
    model_name: str,
    method_name: str,
    overrides: dict[str, Any] | None = None,
    num_labels: int = 2,
    head: str = "classification",
) -> dict[str, Any]:
    """Static counts of a registered model × method, built on the meta device (no weights, no
    network) with a ``num_labels`` classifier or, for ``head="causal-lm"``, its language-model
    head, the way a run counts: at precision int8/nf4 against the quantized base (bitsandbytes
    layers, on the meta device with their logical shapes), unmerged. ``overrides`` are ``--set``
    values; an unknown key or a value the method refuses raises
    :class:`~peftbench.plugin.errors.SpecError`
    naming the valid ones. Raises :class:`NotApplicableError`
    when the method does not apply to the model or its precision."""
    from peftbench.planning.spec import resolve_hparams
    from peftbench.plugin.quantize import BITS, quantize_linears
    from peftbench.plugin.registry import METHODS, MODELS

    method = METHODS.get(method_name)
    hp = resolve_hparams(method_name, overrides)  # the method's own checks included
    precision = hp["precision"]
    loaded = MODELS.get(model_name).build_empty(num_labels, head)
    reason = method.unsupported_reason(loaded.info)
    if reason is None and precision in BITS and method.trains_base_weights:
        reason = f"it trains base weights, which precision {precision} quantizes"
    if reason:
        raise NotApplicableError(f"{method_name} does not apply to {model_name}: {reason}")
    if precision in BITS:
        quantize_linears(loaded.model, loaded.info, BITS[precision])  # meta: structure only
    model, base = adapt(loaded.model, method, hp, loaded.info)
    mergeable = precision not in BITS  # as in a run: merging would requantize the base
    return count_static(model, method, loaded.info, base, inplace=True, mergeable=mergeable)


def split_head(
    key: str, named: list[tuple[str, nn.Parameter]], method: Method, info: ModelInfo
) -> dict[str, int]:
    """``key``, ``key_method`` and ``key_head`` element counts of ``named`` parameters of the
    model ``method`` returned."""
    head = sum(numel(p) for n, p in named if method.is_head(n, info))
    total = sum(numel(p) for _, p in named)
    return {key: total, f"{key}_method": total - head, f"{key}_head": head}


def head_tensors(model: nn.Module, method: Method, info: ModelInfo) -> dict[str, torch.Tensor]:
    """The head as the harness stores it: its trainable parameters."""
    return {
        n: p for n, p in model.named_parameters() if p.requires_grad and method.is_head(n, info)
    }


def backbone_elements(model: nn.Module, method: Method, info: ModelInfo) -> int:
    return sum(numel(p) for n, p in model.named_parameters() if not method.is_head(n, info))


def declared_size(tensors: dict[str, torch.Tensor]) -> dict[str, int]:
    """``stored`` (elements) and ``stored_bytes`` of tensors as they are in memory."""
    return {
        "stored": sum(numel(t) for t in tensors.values()),
        "stored_bytes": sum(nbytes(t) for t in tensors.values()),
    }


def measured_size(tensors: dict[str, torch.Tensor]) -> dict[str, int]:
    """``stored`` and ``stored_bytes`` of tensors saved with safetensors and read back."""
    from safetensors.torch import load_file, save_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stored.safetensors"
        save_file({k: t.detach().cpu().contiguous() for k, t in tensors.items()}, path)
        return declared_size(load_file(path))


def meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers are on the meta device (no tensor
    data is copied), to merge without touching the model."""
    memo: dict[int, Any] = {}
    for tensor in chain(model.parameters(), model.buffers()):
        empty = torch.empty_like(tensor, device="meta")
        is_param = isinstance(tensor, nn.Parameter)
        memo[id(tensor)] = nn.Parameter(empty, tensor.requires_grad) if is_param else empty
    return copy.deepcopy(model, memo)


def changed_elements(base: BaseSnapshot, model: nn.Module | None = None) -> dict[str, int]:
    """Per backbone parameter, the elements that differ from the snapshot: in the base's own
    parameter objects (``model`` None: the unmerged model) or in ``model``'s parameters of the
    same names (a merged model)."""
    values = base_values(base)
    current = base.params if model is None else merged_params(model)
    missing = [name for name in base.backbone if name not in current]
    if missing:
        raise KeyError(f"the merged model lacks base parameters {missing[:3]}...")
    return {
        name: int((current[name].detach().cpu() != values[name]).sum()) for name in base.backbone
    }


def base_values(base: BaseSnapshot) -> Mapping[str, torch.Tensor]:
    if base.values is None:
        raise ValueError("measuring needs the base's values: snapshot with keep_values=True")
    return base.values


def merged_params(model: nn.Module) -> dict[str, nn.Parameter]:
    return dict(model.named_parameters(remove_duplicate=False))


def svd_cost(matrix: torch.Tensor) -> int:
    return math.prod(matrix.shape) * min(matrix.shape)


def delta_rank(before: torch.Tensor, after: torch.Tensor) -> int:
    """Rank of ``after - before``: singular values above ``eps(dtype)·‖after‖_F``, which bounds
    the rounding error of writing the update into ``after`` (so rounding never counts)."""
    after = after.detach().cpu().double()
    tol = torch.finfo(before.dtype).eps * float(torch.linalg.matrix_norm(after))
    return int(torch.linalg.matrix_rank(after - before.double(), atol=tol, rtol=0.0))


def declared_ranks(model: nn.Module, method: Method, base: BaseSnapshot) -> dict[str, int]:
    """The rank ΔW may reach per backbone matrix the method can change: ``min(m, n)`` for a
    trainable matrix, at most that for one under the method's modules (the bound of
    :meth:`Method.update_rank_bounds`: LoRA's r)."""
    names = {id(base.params[n]): n for n in base.backbone if base.params[n].ndim == 2}
    ranks = {
        names[id(p)]: min(logical_shape(p))
        for p in model.parameters()
        if p.requires_grad and id(p) in names
    }
    for weight, bound in method.update_rank_bounds(model).items():
        if weight not in names:
            continue
        name = names[weight]
        full = min(logical_shape(base.params[name]))
        ranks[name] = full if bound is None else min(full, bound)
    return ranks


def summarise_ranks(ranks: dict[str, int], measured: int | None) -> dict[str, Any]:
    """``{"max", "mean", "matrices", "method"}``. ``measured``: how many of the ranks SVD
    measured (``None``: all declared, before training). ``method`` is ``"svd"`` when every rank
    was measured (also when no matrix changed), ``"declared"`` when none was, else ``"mixed"``."""
    values = list(ranks.values())
    if measured is None or (values and not measured):
        method = "declared"
    else:
        method = "svd" if measured == len(values) else "mixed"
    return {
        "max": max(values, default=0),
        "mean": sum(values) / len(values) if values else 0.0,
        "matrices": len(values),
        "method": method,
    }


def with_percentages(counts: dict[str, Any], total: int) -> dict[str, Any]:
    """``counts`` with ``<key>_pct`` (percent of ``total``, the base) after every element
    count; ``changed_pct`` has ``changed``'s shape."""

    def pct(value: int | None) -> float | None:
        return None if value is None else 100.0 * value / total

    out: dict[str, Any] = {}
    for key, value in counts.items():
        out[key] = value
        if key in PERCENT_OF:
            out[f"{key}_pct"] = pct(value)
        elif key == "changed":
            out["changed_pct"] = None if value is None else {k: pct(v) for k, v in value.items()}
    return out
