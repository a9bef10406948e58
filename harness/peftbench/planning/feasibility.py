"""Whether a resolved run can exist, decided from its spec and the model's meta-device build
(structure without weights: nothing is loaded or downloaded beyond the model's config).

Two kinds of answer (docs/measurement.md, "Feasibility"):

- :func:`spec_problems`: values no run could use (a method's hyperparameter out of its range
  or choices, ``max_length`` beyond the model's positions, ``target_modules`` that match no
  module, anything the method refuses when applied to the meta build). The sweep refuses the
  whole config, listing every problem, before any job starts.
- :func:`unsupported_reason`: a known incompatibility of a valid combination (method ×
  architecture, method × precision, precision × device). A sweep crossing axes meets these
  normally: the run is recorded ``unsupported`` with the reason, before any weights load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from peftbench.planning.structure import MetaModel, task_model
from peftbench.plugin.quantize import BITS
from peftbench.plugin.registry import METHODS, TASKS

if TYPE_CHECKING:
    from peftbench.planning.spec import RunSpec

POSITION_FIELDS = ("max_position_embeddings", "n_positions")
"""Config fields that bound a model's sequence length (absent: relative positions, no bound)."""


def meta_build(model: str, task: str) -> MetaModel | None:
    """The task model of ``model`` for ``task`` on the meta device
    (:func:`~peftbench.planning.structure.task_model`), or ``None`` when its config cannot be
    read here (e.g. an ``hf:`` model offline: the job will say why)."""
    try:
        return task_model(model, task)
    except OSError:
        return None


def task_problems(task: str) -> list[str]:
    """A task posed in a way no model builds, or whose metrics have no declared direction and
    range (they could not be ranked)."""
    from peftbench.plugin.metrics import metric
    from peftbench.plugin.task import Head

    problems = []
    try:
        Head.of(TASKS.get(task).head)
    except ValueError as error:
        problems.append(f"task {task!r}: {error}")
    for name in TASKS.get(task).metrics:
        try:
            metric(name)
        except ValueError as error:
            problems.append(f"task {task!r}: {error}")
    return problems


def spec_problems(spec: RunSpec) -> list[str]:
    """Every value of ``spec`` that no run could use, each naming the value and what is valid."""
    where = f"{spec.method} on {spec.model}"
    problems: list[str] = []  # the method's own value checks ran when the spec was resolved
    built = meta_build(spec.model, spec.task)
    if built is None:
        return []
    config = built.config
    for field in POSITION_FIELDS:
        limit = getattr(config, field, None)
        if isinstance(limit, int) and spec.hparams["max_length"] > limit:
            problems.append(
                f"max_length={spec.hparams['max_length']} for {where}: the model has {limit} "
                f"positions ({field}); valid: 1 to {limit}"
            )
    return problems + apply_problems(spec)


def apply_problems(spec: RunSpec) -> list[str]:
    """What applying the spec's method to the meta build raises (peft's own checks included);
    nothing where the method does not apply (:func:`unsupported_reason` says why)."""
    from peftbench.plugin.method import linear_module_names

    hp = spec.hparams
    try:
        task_model(spec.model, spec.task, spec.method, hp)
    except (ValueError, KeyError, TypeError) as error:  # a value the method refuses
        problem = f"{spec.method} on {spec.model}: {type(error).__name__}: {error}"
        if "target_modules" in hp and "target" in str(error).lower():
            built = task_model(spec.model, spec.task)
            names = ", ".join(["auto", "all-linear", *linear_module_names(built.model, built.info)])
            problem += f" (target_modules={hp['target_modules']!r}; valid: {names})"
        return [problem]
    except Exception:  # the method's own failure: the run meets it again and records it
        return []
    return []


def unsupported_reason(spec: RunSpec, device_kind: str) -> str | None:
    """Why a valid ``spec`` cannot run on a ``device_kind`` (``cpu`` or ``cuda``) device, or
    ``None`` when it can."""
    method = METHODS.get(spec.method)
    precision = spec.hparams["precision"]
    if precision == "fp16" and device_kind == "cpu":
        return "fp16 mixed precision needs a CUDA device; this run is on the CPU"
    if precision in BITS and method.trains_base_weights:
        return f"{spec.method} trains base weights, which precision {precision} quantizes"
    built = meta_build(spec.model, spec.task)
    return None if built is None else method.unsupported_reason(built.info)
