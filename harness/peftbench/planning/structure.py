"""The task model on the meta device (structure without weights: nothing is loaded or downloaded
beyond the model's config), with a method applied as a run applies it. One build and one cache
for everything the planner derives from a model's structure: feasibility
(:mod:`~peftbench.planning.feasibility`), resource estimates (:func:`~.sweep.footprint`) and
parameter counts (:func:`~.counting.count_model_method`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from peftbench.plugin.registry import METHODS, MODELS, TASKS
from peftbench.plugin.task import Head

if TYPE_CHECKING:
    from torch import nn
    from transformers import PretrainedConfig

    from peftbench.planning.counting import BaseSnapshot
    from peftbench.plugin.model import ModelInfo


@dataclass(frozen=True)
class MetaModel:
    """A task model on the meta device: built, and adapted by a method unless none was given or
    it does not apply. Shared through the cache: read it, never change it (unless it was taken
    with ``own=True``)."""

    model: nn.Module
    config: PretrainedConfig
    """The built model's configuration."""
    info: ModelInfo
    """The built model's (before the method)."""
    base: BaseSnapshot | None
    """The task model before the method (:func:`~.counting.adapt`); ``None`` when no method
    was applied."""
    not_applied: str | None
    """Why the method was not applied: it does not apply to the model, or to the precision
    (``Method.unsupported_reason``, or a method that trains base weights on a quantized base)."""


_Outcome = tuple[MetaModel, None, None] | tuple[None, Exception, TracebackType | None]


def meta_model(
    model: str,
    num_labels: int,
    head: str = Head.CLASSIFICATION,
    method: str | None = None,
    hparams: dict[str, Any] | None = None,
    own: bool = False,
) -> MetaModel:
    """``model``'s task model for ``head`` (a ``num_labels``-way classifier, or its
    language-model head) on the meta device, adapted by ``method`` with its resolved ``hparams``
    the way a run adapts it: at precision int8/nf4 against the quantized base (bitsandbytes
    layers with their logical shapes), the head unfrozen.

    Cached: an equal call returns the same object, or raises again what the build or the method
    raised (e.g. ``OSError`` where an ``hf:`` model's config cannot be read offline). ``own``
    hands the build over to the caller, who may then change it (merge into it): it leaves the
    cache, and a later call builds anew."""
    head = Head.of(head)
    labels = num_labels if head == Head.CLASSIFICATION else 0  # an LM head has no label count
    key = (model, labels, head.value, method, json.dumps(hparams or {}, sort_keys=True))
    found = _BUILDS.pop(key, None) if own else _BUILDS.get(key)
    if found is None:
        try:
            found = _build(model, labels, head, method, hparams or {}), None, None
        except Exception as error:  # kept: the same call meets the same failure
            found = None, error, error.__traceback__
    built, error, trace = found
    if error is not None or not own:
        _BUILDS[key] = found
    if error is not None:
        raise error.with_traceback(trace)
    return built


def task_model(
    model: str, task: str, method: str | None = None, hparams: dict[str, Any] | None = None
) -> MetaModel:
    """:func:`meta_model` for ``task``: its head and its number of labels, as the run builds."""
    plugin = TASKS.get(task)
    return meta_model(model, plugin.num_labels, plugin.head, method, hparams)


_BUILDS: dict[tuple[str, int, str, str | None, str], _Outcome] = {}
"""The cache of :func:`meta_model`, by model, label count (0 for a language-model head), head,
method and the hyperparameters' JSON."""


def _build(
    model: str, num_labels: int, head: Head, method: str | None, hp: dict[str, Any]
) -> MetaModel:
    from peftbench.planning.counting import adapt
    from peftbench.plugin.quantize import BITS, quantize_linears

    loaded = MODELS.get(model).build_empty(num_labels, head)
    if method is None:
        return MetaModel(loaded.model, loaded.model.config, loaded.info, None, None)
    plugin = METHODS.get(method)
    precision = hp.get("precision")
    reason = plugin.unsupported_reason(loaded.info)
    if reason is None and precision in BITS and plugin.trains_base_weights:
        reason = f"it trains base weights, which precision {precision} quantizes"
    if reason is not None:
        return MetaModel(loaded.model, loaded.model.config, loaded.info, None, reason)
    if precision in BITS:
        quantize_linears(loaded.model, loaded.info, BITS[precision])  # meta: structure only
    adapted, base = adapt(loaded.model, plugin, hp, loaded.info)
    return MetaModel(adapted, loaded.model.config, loaded.info, base, None)
