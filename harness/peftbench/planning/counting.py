"""Parameter counts under peftbench's one standard; the definitions are in docs/parameters.md.

Usage, around a run::

    model, base = adapt(loaded.model, method, hp, info, keep_values=True)
    static = count_static(model, method, info, base)    # also works on the meta device
    ...train...
    trained = count_trained(model, method, info, base)  # stored (measured), changed, update_rank
    params = {**static, **trained}

Without weights: :func:`count_model_method` counts the task model built on the meta device
(:func:`peftbench.planning.structure.meta_model`).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import tempfile
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
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
    named = list(adapted.named_parameters())
    if not any(method.is_head(name, info) for name, _ in named):  # names that hide the head
        head = head_test(adapted, method, info, base)  # (a model wrapping the task model's)
        for name, parameter in named:
            if head(name):
                parameter.requires_grad_(True)
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
    (it needs training) and ``update_rank`` is the declared bound, ``None`` with the reason
    where nothing declares one.
    """
    base_ids = {id(p) for p in base.params.values()}
    head = head_test(model, method, info, base)
    names = identity_names(model, base)
    params = list(model.named_parameters())
    trainable = [(n, p) for n, p in params if p.requires_grad]
    added = [(n, p) for n, p in params if id(p) not in base_ids]
    artifact = method.artifact(model, info)
    declared = declared_ranks(model, method, base)
    counts = {
        "base_total": base.total,
        **split_head("trainable", trainable, head),
        **split_head("added", added, head),
        **declared_size(distinct({**artifact, **head_tensors(model, method, info, head)})),
        "inference_added": None,
        "inference_basis": None,
        "changed": None,
        "update_rank": None,
    }
    merged = method.merge(model if inplace else meta_copy(model)) if mergeable else None
    wrapped = wrapped_weights(merged, names, base) if merged is not None else {}
    for name in wrapped:
        declared.setdefault(name, NOT_DECLARED.format(method=method.name))
    if merged is not None:
        counts["inference_added"] = backbone_elements(merged, head) - base.total
    else:
        counts["inference_added"] = sum(
            numel(t) for key, t in artifact.items() if method.base_name(key) not in base.params
        )
    counts["inference_basis"] = inference_basis(method, merged, mergeable, len(wrapped))
    counts["update_rank"] = summarise_ranks(declared, measured=None)
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
    merge runs on a copy unless ``inplace`` (then ``model`` is merged and unusable after).

    The served weights are the merged model's; a weight the merged model still holds inside
    the method's modules is served as that layer's effective weight (:func:`effective_weight`).
    Unmerged, a weight under the method's modules has the rank its rule declares."""
    values = base_values(base)
    declared = declared_ranks(model, method, base)
    names = identity_names(model, base)
    head = head_test(model, method, info, base)
    artifact = method.artifact(model, info)
    stored = measured_size(distinct({**artifact, **head_tensors(model, method, info, head)}))
    unmerged = changed_elements(base)
    merged = method.merge(model if inplace else copy.deepcopy(model)) if mergeable else None
    served = served_weights(merged, names, base) if merged is not None else None
    after = None if served is None else changed_served(served, values)
    ranks: dict[str, int | str] = {}
    measured = 0
    for name in base.backbone:
        before = values[name]
        if before.ndim != 2:
            continue
        current = base.params[name] if served is None else served[name]
        if isinstance(current, str):  # a served layer whose weight cannot be read
            ranks[name] = current
        elif not (unmerged if after is None else after)[name]:
            if served is None and name in declared and not base.params[name].requires_grad:
                ranks[name] = declared[name]  # kept beside the weight: the rule's rank
        elif svd_cost(before) <= svd_max_cost:
            ranks[name] = delta_rank(before, current)
            measured += 1
        else:
            ranks[name] = declared.get(name, min(before.shape))
    merged_changed = None if after is None or None in after.values() else sum(after.values())
    counts = {
        **stored,
        "changed": {"unmerged": sum(unmerged.values()), "merged": merged_changed},
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
    from peftbench.planning.structure import meta_model
    from peftbench.plugin.quantize import BITS
    from peftbench.plugin.registry import METHODS

    hp = resolve_hparams(method_name, overrides)  # the method's own checks included
    built = meta_model(model_name, num_labels, head, method_name, hp, own=True)  # merged into
    if built.not_applied:
        reason = built.not_applied
        raise NotApplicableError(f"{method_name} does not apply to {model_name}: {reason}")
    mergeable = hp["precision"] not in BITS  # as in a run: merging would requantize the base
    method = METHODS.get(method_name)
    return count_static(
        built.model, method, built.info, built.base, inplace=True, mergeable=mergeable
    )


def split_head(
    key: str, named: list[tuple[str, nn.Parameter]], head: Callable[[str], bool]
) -> dict[str, int]:
    """``key``, ``key_method`` and ``key_head`` element counts of ``named`` parameters of the
    adapted model (``head``: :func:`head_test`)."""
    in_head = sum(numel(p) for n, p in named if head(n))
    total = sum(numel(p) for _, p in named)
    return {key: total, f"{key}_method": total - in_head, f"{key}_head": in_head}


def head_tensors(
    model: nn.Module, method: Method, info: ModelInfo, head: Callable[[str], bool] | None = None
) -> dict[str, torch.Tensor]:
    """The head as the harness stores it: its trainable parameters (``head``: which names
    are the head's, :func:`head_test`; default :meth:`Method.is_head`)."""
    head = head or (lambda name: method.is_head(name, info))
    return {n: p for n, p in model.named_parameters() if p.requires_grad and head(n)}


def head_test(
    model: nn.Module, method: Method, info: ModelInfo, base: BaseSnapshot
) -> Callable[[str], bool]:
    """Whether a parameter name of ``model`` (what the method returned, or a copy or merge of
    it) is the task head's: by :meth:`Method.is_head`, or as the base parameter it is (a head
    the method's names hide: a model wrapping the task model, as peft's does)."""
    names = identity_names(model, base)

    def head(name: str) -> bool:
        return method.is_head(name, info) or is_head(names.get(name, name), info)

    return head


def identity_names(model: nn.Module, base: BaseSnapshot) -> dict[str, str]:
    """The base's name of each parameter of ``model`` that is a base parameter object (a
    method that wraps the model renames what it keeps)."""
    ids = {id(p): name for name, p in base.params.items()}
    return {
        name: ids[id(p)]
        for name, p in model.named_parameters(remove_duplicate=False)
        if id(p) in ids
    }


def backbone_elements(model: nn.Module, head: Callable[[str], bool]) -> int:
    return sum(numel(p) for n, p in model.named_parameters() if not head(n))


def inference_basis(
    method: Method, merged: nn.Module | None, mergeable: bool, wrapped: int = 0
) -> str:
    """What ``inference_added`` counts: ``merged`` (the model :meth:`Method.merge` serves, the
    method folded into the weights) or ``unmerged: <why>``: the artifact's new tensors kept
    beside the base, or the served model's, which still holds ``wrapped`` weight matrices
    inside the method's modules."""
    name = method.name or type(method).__name__
    if not mergeable:
        return "unmerged: a quantized base is not merged into (it would be requantized)"
    if merged is None:
        return f"unmerged: {name} keeps its modules at inference (Method.merge returns None)"
    if wrapped:
        return (
            f"unmerged: the model {name} serves (Method.merge) keeps {wrapped} weight matrices "
            "inside its modules"
        )
    return "merged"


def distinct(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each tensor once: one that views the same elements as an earlier one (peft's RandLoRA
    lists its shared projections under every layer's name) is stored once. Compared by
    storage object, so on the meta device too."""
    seen: set[tuple[Any, ...]] = set()
    out = {}
    for key, tensor in tensors.items():
        view = (
            tensor.untyped_storage()._cdata,  # the storage's identity (data_ptr is 0 on meta)
            tensor.storage_offset(),
            tuple(tensor.shape),
            tensor.stride(),
            tensor.dtype,
        )
        if view not in seen:
            seen.add(view)
            out[key] = tensor
    return out


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


def served_weights(
    merged: nn.Module, names: dict[str, str], base: BaseSnapshot
) -> dict[str, torch.Tensor | str]:
    """The backbone's parameters as the merged model serves them, by base name (``names``:
    :func:`identity_names` of the model before merging; a copy keeps its names). A weight the
    merged model still holds inside the method's modules is served as its layer's effective
    weight (:func:`effective_weight`), or as the reason it cannot be read."""
    wrapped = wrapped_weights(merged, names, base)
    served: dict[str, torch.Tensor | str] = {}
    holders: dict[str, str] = {}
    for name, parameter in merged.named_parameters(remove_duplicate=False):
        known = name if name in base.params else names.get(name)
        if known in wrapped:
            holders[known] = name.rpartition(".")[0]
        elif known is not None:
            served[known] = parameter
    for known, path in wrapped.items():
        layer, holder = merged.get_submodule(path), merged.get_submodule(holders[known])
        served[known] = effective_weight(layer, holder, known.rpartition(".")[2])
    missing = [name for name in base.backbone if name not in served]
    if missing:
        raise KeyError(f"the merged model lacks base parameters {missing[:3]}...")
    return served


def changed_served(
    served: dict[str, torch.Tensor | str], values: Mapping[str, torch.Tensor]
) -> dict[str, int | None]:
    """Per backbone parameter, the served elements that differ from the snapshot (``None``:
    the served weight cannot be read)."""
    return {
        name: None if isinstance(t, str) else int((t.detach().cpu() != values[name]).sum())
        for name, t in served.items()
        if name in values
    }


def wrapped_weights(model: nn.Module, names: dict[str, str], base: BaseSnapshot) -> dict[str, str]:
    """The backbone's weight matrices that ``model`` holds inside the method's modules, as
    base name -> that module's path: the nearest module above the weight holding parameters
    that are not the base's, when it holds no other base matrix (peft's tuner layers wrap the
    layer they adapt this way; an adapter beside a block is no such module)."""
    matrices = {n for n in base.backbone if len(logical_shape(base.params[n])) == 2}
    weights: Counter[str] = Counter()
    added: Counter[str] = Counter()
    located: dict[str, str] = {}
    for name, _ in model.named_parameters(remove_duplicate=False):
        known = name if name in base.params else names.get(name)
        if known in matrices:
            located[name] = known
            weights.update(module_prefixes(name))
        elif known is None:
            added.update(module_prefixes(name))
    wrapped = {}
    for name, known in located.items():
        prefix = next((p for p in module_prefixes(name) if added[p]), None)
        if prefix is not None and weights[prefix] == 1:
            wrapped[known] = prefix
    return wrapped


def module_prefixes(name: str) -> list[str]:
    """The paths of the modules above parameter ``name``, nearest first, the root ``""`` last."""
    parts = name.split(".")[:-1]
    return [".".join(parts[:i]) for i in range(len(parts), -1, -1)]


PROBE_MAX_ELEMENTS = 2**26
"""Largest ``d_in · (d_in + d_out)`` of a layer whose effective weight is read by probing
(float64: 512 MB)."""


def effective_weight(layer: nn.Module, holder: nn.Module, attr: str) -> torch.Tensor | str:
    """The weight ``layer`` applies in place of ``holder.<attr>`` (``holder``: the base layer it
    wraps, a linear layer, GPT-2's ``Conv1D`` or an embedding), in that weight's layout, or why
    it cannot be read. Read from a float64 copy, in eval mode: the layer's output on the
    identity (or every token id) less its output on zero, after checking on random inputs
    that the layer is affine in its input (an update that depends on the input has no ΔW)."""
    weight = getattr(holder, attr)
    out, width = logical_shape(weight)
    embedding = isinstance(holder, nn.Embedding)
    if not embedding and width * (width + out) > PROBE_MAX_ELEMENTS:
        return f"the served layer is too large to read ({out}×{width})"
    try:
        with torch.no_grad():
            return probe(layer, holder, weight, embedding)
    except (RuntimeError, TypeError, ValueError, NotImplementedError) as error:
        return f"the served layer cannot be read: {type(error).__name__}: {error}"[:300]


def probe(
    layer: nn.Module, holder: nn.Module, weight: torch.Tensor, embedding: bool
) -> torch.Tensor | str:
    """:func:`effective_weight`'s reading (which raises what the layer raises)."""
    device = weight.device
    layer, holder = (copy.deepcopy(m).double().eval() for m in (layer, holder))
    if embedding:
        ids = torch.arange(weight.shape[0], device=device)
        return layer(ids)
    for size, transposed in ((weight.shape[1], True), (weight.shape[0], False)):
        eye = torch.eye(size, dtype=torch.float64, device=device)
        zero = torch.zeros(1, size, dtype=torch.float64, device=device)
        read = holder(eye) - holder(zero)
        if read.shape == (weight.shape[::-1] if transposed else weight.shape) and torch.allclose(
            read.T if transposed else read, weight.double()
        ):
            break
    else:
        return "the served layer's input is not the weight's rows or columns"
    offset = layer(zero)
    linear = layer(eye) - offset
    inputs = torch.randn(3, size, dtype=torch.float64, device=device)
    if not torch.allclose(layer(inputs), inputs @ linear + offset, rtol=1e-9, atol=1e-9):
        return "the served layer is not affine in its input: its update has no ΔW"
    return linear.T if transposed else linear


NOT_DECLARED = (
    "measured only on real weights: run the method ({method} declares no rank rule for the "
    "layers it wraps, Method.update_rank_bounds)"
)
"""The rank's reason, before training, for a weight the method wraps without a declared rule."""


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


def declared_ranks(model: nn.Module, method: Method, base: BaseSnapshot) -> dict[str, int | str]:
    """The rank ΔW may reach per backbone matrix the method can change: ``min(m, n)`` for a
    trainable matrix; for one under the method's modules, the bound of
    :meth:`Method.update_rank_bounds` (LoRA's r; at most ``min(m, n)``), or the reason none
    can be declared. A bound of 0 (the module changes no weight, e.g. biases only) is no
    change."""
    names = {id(base.params[n]): n for n in base.backbone if base.params[n].ndim == 2}
    ranks: dict[str, int | str] = {
        names[id(p)]: min(logical_shape(p))
        for p in model.parameters()
        if p.requires_grad and id(p) in names
    }
    for weight, bound in method.update_rank_bounds(model).items():
        if weight not in names or bound == 0:
            continue
        name = names[weight]
        full = min(logical_shape(base.params[name]))
        if isinstance(bound, str):
            ranks[name] = bound
        else:
            ranks[name] = full if bound is None else min(full, bound)
    return ranks


def summarise_ranks(ranks: dict[str, int | str], measured: int | None) -> dict[str, Any]:
    """``{"max", "mean", "matrices", "method"}``, and ``"reason"`` when some rank cannot be
    determined (a reason instead of a rank in ``ranks``): then ``max`` and ``mean`` are
    ``None``, never a guess. ``measured``: how many of the ranks SVD measured (``None``: all
    declared, before training). ``method`` is ``"svd"`` when every known rank was measured
    (also when no matrix changed), ``"declared"`` when none was, else ``"mixed"``."""
    values = [v for v in ranks.values() if not isinstance(v, str)]
    reasons = sorted({v for v in ranks.values() if isinstance(v, str)})
    if measured is None or (values and not measured):
        method = "declared"
    else:
        method = "svd" if measured == len(values) else "mixed"
    summary: dict[str, Any] = {
        "max": max(values, default=0),
        "mean": sum(values) / len(values) if values else 0.0,
        "matrices": len(ranks),
        "method": method,
    }
    if reasons:
        unknown = len(ranks) - len(values)
        summary.update(
            max=None, mean=None, reason=f"{unknown} of {len(ranks)} matrices: {'; '.join(reasons)}"
        )
    return summary


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
