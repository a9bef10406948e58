"""Run specifications: one model × method × task × seed with every hyperparameter resolved.

Resolution order (later wins): the harness's training defaults, the method's defaults, the
user's overrides. Every name and value is checked here, before any expensive work.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from peftbench.planning.grid import DEFAULT_SETTING, check_label
from peftbench.plugin.errors import SpecError
from peftbench.plugin.method import HParam
from peftbench.plugin.registry import METHODS, MODELS, TASKS

FORGETTING_TEXTS = 64
"""Texts in the general-text sample that forgetting is measured on
(:mod:`peftbench.run.forgetting`); ``forgetting_texts`` takes its first N."""
TRAINING_DEFAULTS: dict[str, Any] = {
    "steps": 100,
    "batch_size": 16,
    "eval_batch_size": 64,
    "max_length": 64,
    "warmup_ratio": 0.06,
    "lr_scheduler": "linear",
    "weight_decay": 0.0,
    "max_grad_norm": 0.0,
    "head_lr": 0.0,
    "precision": "fp32",
    "max_eval_examples": 0,
    "max_new_tokens": 0,
    "checkpoint_every_steps": 0,
    "checkpoint_every_minutes": 10.0,
    "forgetting_texts": FORGETTING_TEXTS,
}
"""Training budget and loop settings shared by all methods (``max_eval_examples`` 0: all;
``head_lr`` 0: the task head trains at ``lr``, like everything else; ``max_new_tokens`` 0: the
generation task's own limit; ``max_grad_norm`` 0: no gradient clipping; ``checkpoint_every_*``
0: no checkpoints on that count, :mod:`peftbench.run.checkpoint`)."""

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8", "nf4")
"""auto: bf16 where the device computes it natively, else fp32 (:mod:`peftbench.run.precision`;
the record says what ran and why); fp32; bf16/fp16 mixed precision; int8/nf4: the base
quantized with bitsandbytes."""
POSITIVE = ("steps", "batch_size", "eval_batch_size", "max_length")
NON_NEGATIVE = ("max_eval_examples", "max_new_tokens")
SCHEDULERS_NEEDING_MORE = {
    "reduce_lr_on_plateau": "steps on a metric, not once per optimizer step",
    "greedy": "steps on a metric, not once per optimizer step",
    "cosine_with_min_lr": "needs min_lr or min_lr_rate",
    "cosine_warmup_with_min_lr": "needs min_lr or min_lr_rate",
    "warmup_stable_decay": "needs num_decay_steps",
}
"""transformers schedules that take more than the warm-up and total steps (the only values a
run passes ``get_scheduler``): not offered."""


@cache
def lr_schedulers() -> tuple[str, ...]:
    """The ``lr_scheduler`` values: transformers' ``SchedulerType`` names, less
    :data:`SCHEDULERS_NEEDING_MORE`."""
    from transformers.trainer_utils import SchedulerType

    return tuple(s.value for s in SchedulerType if s.value not in SCHEDULERS_NEEDING_MORE)


RUN_PATTERN = "{model}/{method}/{task}/{setting}/seed{seed}"
"""A run's id, and its folder under ``<results>/runs/``: the one place the layout is written
(the Snakemake rules use it as their wildcard pattern)."""
SPEC_FILE = "spec.json"
"""The run contract in a run's folder: what ``peftbench run --spec`` runs (docs/measurement.md)."""


@dataclass(frozen=True)
class RunSpec:
    """One run, every value resolved: the contract between planning and the job."""

    model: str
    method: str
    task: str
    seed: int
    hparams: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    setting: str = DEFAULT_SETTING
    """The grid point's label (:mod:`peftbench.planning.grid`); ``default`` outside a grid."""
    gpus: int = 0
    """GPUs the run trains on: 0 is the CPU, even on a GPU host; N > 0 are GPUs the run claims,
    and a host without them fails the job (``gpus_per_run`` in a sweep)."""
    processes: int = 1
    """Processes that train (:mod:`peftbench.run.distributed`): one per GPU, or N on the CPU (gloo);
    each step's ``batch_size`` examples are split among them."""

    @property
    def run_id(self) -> str:
        return RUN_PATTERN.format(**asdict(self))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        """The canonical JSON text of the spec (sorted keys): equal specs, equal text."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> RunSpec:
        """The spec ``fields`` describe, resolved and checked again (a spec file is input too)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(fields) - names
        missing = {"model", "method", "task", "seed"} - set(fields)
        if unknown or missing:
            raise SpecError(
                f"run spec: unknown fields {sorted(unknown)}, missing fields {sorted(missing)}; "
                f"valid: {', '.join(sorted(names))}"
            )
        return resolve_spec(
            fields["model"],
            fields["method"],
            fields["task"],
            fields["seed"],
            fields.get("hparams"),
            fields.get("data_dir"),
            fields.get("setting", DEFAULT_SETTING),
            fields.get("gpus", 0),
            fields.get("processes"),
        )


def write_spec(folder: str | os.PathLike, spec: RunSpec) -> Path:
    """Write ``spec`` to ``folder``/:data:`SPEC_FILE` atomically, unless the file already holds
    it (then it is left untouched: a workflow input keeps its time stamp); return its path."""
    from peftbench.records.files import write_json_atomic

    path = Path(folder) / SPEC_FILE
    try:
        unchanged = json.loads(path.read_text()) == spec.to_dict()
    except (OSError, ValueError):
        unchanged = False
    if not unchanged:
        write_json_atomic(path, spec.to_dict())
    return path


def read_spec(path: str | os.PathLike) -> RunSpec:
    """The spec in a :data:`SPEC_FILE`, resolved and checked; a bad file raises
    :class:`SpecError` naming it."""
    try:
        fields = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SpecError(f"run spec {path}: cannot be read ({error})") from error
    if not isinstance(fields, dict):
        raise SpecError(f"run spec {path}: not a JSON object")
    try:
        return RunSpec.from_dict(fields)
    except SpecError as error:
        raise SpecError(f"run spec {path}: {error}") from error


def resolve_hparams(method: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Training defaults + the method's defaults + ``overrides``, each value parsed to its
    declared type, then the training values and the method's own
    (:meth:`peftbench.plugin.method.Method.check_hparams`) checked."""
    plugin = METHODS.get(method)
    declared = {
        **{key: HParam(default, "") for key, default in TRAINING_DEFAULTS.items()},
        **plugin.hyperparameters,
    }
    resolved = {key: h.default for key, h in declared.items()}
    for key, raw in (overrides or {}).items():
        if key not in declared:
            close = difflib.get_close_matches(key, declared, n=1)
            guess = f"did you mean {close[0]!r}? " if close else ""
            raise SpecError(
                f"unknown hyperparameter {key!r} for method {method!r}; {guess}"
                f"valid: {', '.join(sorted(declared))}"
            )
        resolved[key] = declared[key].parse(key, raw)
    check_hparams(resolved)
    problems = plugin.check_hparams(resolved)
    if problems:
        raise SpecError(f"{method}: {'; '.join(problems)}")
    return resolved


def check_hparams(hp: dict[str, Any]) -> None:
    for key in POSITIVE:
        if hp[key] <= 0:
            raise SpecError(f"{key}={hp[key]!r}: must be a positive integer")
    if hp["precision"] not in PRECISIONS:
        raise SpecError(f"precision={hp['precision']!r}; valid: {', '.join(PRECISIONS)}")
    if not 0 <= hp["warmup_ratio"] < 1:
        raise SpecError(f"warmup_ratio={hp['warmup_ratio']!r}: must be in [0, 1)")
    if not hp["lr"] > 0:  # NaN too
        raise SpecError(f"lr={hp['lr']!r}: must be positive")
    if hp["head_lr"] < 0:
        raise SpecError(f"head_lr={hp['head_lr']!r}: must be >= 0 (0: the same as lr)")
    if not hp["max_grad_norm"] >= 0:  # NaN too
        raise SpecError(f"max_grad_norm={hp['max_grad_norm']!r}: must be >= 0 (0: no clipping)")
    for key, count in (("checkpoint_every_steps", "steps"), ("checkpoint_every_minutes", "time")):
        if not hp[key] >= 0:  # NaN too
            raise SpecError(f"{key}={hp[key]!r}: must be >= 0 (0: no checkpoints by {count})")
    if hp["lr_scheduler"] not in lr_schedulers():
        raise SpecError(f"lr_scheduler={hp['lr_scheduler']!r}; valid: {', '.join(lr_schedulers())}")
    for key in NON_NEGATIVE:
        if hp[key] < 0:
            raise SpecError(f"{key}={hp[key]!r}: must be >= 0 (0: all, or the task's own)")
    if not 1 <= hp["forgetting_texts"] <= FORGETTING_TEXTS:
        raise SpecError(
            f"forgetting_texts={hp['forgetting_texts']!r}; valid: 1 to {FORGETTING_TEXTS} (the "
            "first N texts of the general-text sample)"
        )


def resolve_spec(
    model: str,
    method: str,
    task: str,
    seed: int,
    overrides: dict[str, Any] | None = None,
    data_dir: str | None = None,
    setting: str = DEFAULT_SETTING,
    gpus: int = 0,
    processes: int | None = None,
) -> RunSpec:
    """A fully resolved, validated :class:`RunSpec` (unknown names fail with the valid ones)."""
    for registry, name in ((MODELS, model), (METHODS, method), (TASKS, task)):
        registry.check(name)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SpecError(f"seed={seed!r}: must be a non-negative integer")
    try:
        check_label(setting)
    except ValueError as error:
        raise SpecError(str(error)) from None
    processes = check_processes(gpus, processes)
    hparams = resolve_hparams(method, overrides)
    if hparams["batch_size"] % processes:
        raise SpecError(
            f"batch_size={hparams['batch_size']} is split among processes={processes}: "
            f"valid: a multiple of {processes}"
        )
    return RunSpec(model, method, task, seed, hparams, data_dir, setting, gpus, processes)


def check_processes(gpus: Any, processes: Any) -> int:
    """The run's process count: ``processes``, or one per GPU (1 on the CPU) when ``None``."""
    for name, value, least in (("gpus", gpus, 0), ("processes", processes, 1)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < least
        ):
            raise SpecError(f"{name}={value!r}: must be an integer >= {least}")
    if processes is None:
        return max(1, gpus)
    if gpus and processes != gpus:
        raise SpecError(f"processes={processes} with gpus={gpus}: one per GPU; valid: {gpus}")
    return processes


def parse_assignments(items: list[str]) -> dict[str, str]:
    """``["lr=1e-3", "r=4"]`` -> ``{"lr": "1e-3", "r": "4"}``."""
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--set {item!r}: expected key=value")
        parsed[key.strip()] = value.strip()
    return parsed
