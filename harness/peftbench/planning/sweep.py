"""Sweep planning: a config's models × methods × tasks × seeds as validated run specs, and the
per-job values the Snakemake rules need. Every spec is resolved here, so a bad name or value
stops the workflow before any job starts, naming the value and the valid choices.

Each run's scheduler resources (host memory, wall time, GPUs) are derived from its model and
method without loading weights: the task model is built on the meta device, the method applied
to it, and the training state (weights, gradients, two AdamW moments per trainable element),
activations and FLOPs estimated from the result (:func:`estimate_resources`).
"""

from __future__ import annotations

import itertools
import logging
import math
import shlex
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from peftbench.planning.codehash import (
    code_hash,
    harness_hash,
    hash_files,
    plugin_files,
    reporting_hash,
)
from peftbench.planning.feasibility import spec_problems, task_problems
from peftbench.planning.grid import DEFAULT_SETTING, grid_points, setting_label
from peftbench.planning.peft_experiments import experiment_settings
from peftbench.planning.spec import RUN_PATTERN, RunSpec, SpecError, resolve_hparams, resolve_spec
from peftbench.plugin.registry import METHODS, MODELS, TASKS, UnknownNameError
from peftbench.plugin.task import TaskDataError

log = logging.getLogger(__name__)

MiB = 2**20
RUNTIME_BYTES = 1536 * MiB
"""Resident set of the interpreter with torch, transformers and datasets imported."""
CUDA_HOST_BYTES = 3072 * MiB
"""Extra host memory of a process that initialises CUDA (its libraries and context)."""
MEMORY_SAFETY = 1.25
CPU_FLOPS_PER_THREAD = 10e9
"""Sustained fp32 FLOP/s of one CPU core on small-batch transformer training."""
GPU_FLOPS = {"fp32": 10e12, "half": 50e12}
"""Sustained FLOP/s of one data-centre GPU (about half an A100's dense peak), in fp32 and in
bf16/fp16 mixed precision (quantized bases compute in fp32)."""
HALF = ("bf16", "fp16")
LOAD_BYTES_PER_S = 200e6
"""Checkpoint reads from a shared file system."""
STARTUP_S = 120.0
"""Imports, tokenizer and dataset loading, evaluation set-up."""
EVAL_EXAMPLES_IF_ALL = 5_000
"""Evaluation examples assumed when ``max_eval_examples`` is 0 (the whole split)."""
TIME_SAFETY = 2.0
MIN_RUNTIME_MIN = 10
FALLBACK = {"mem_mb": 16_000, "runtime_min": 240}
"""Resources of a run whose size cannot be estimated (e.g. an ``hf:`` model's config offline)."""


@dataclass(frozen=True)
class RunResources:
    """What one run asks of a scheduler."""

    mem_mb: int
    """Host memory."""
    runtime_min: int
    """Wall time."""
    gpus: int


@dataclass(frozen=True)
class Footprint:
    """A model × method's size, from its meta-device build."""

    weights_bytes: int
    training_state_bytes: int
    """Weights and buffers, plus a gradient and two AdamW moments per trainable element."""
    matmul_params: int
    trainable_params: int
    num_layers: int
    hidden_size: int
    num_heads: int


class SweepError(ValueError):
    """The config describes runs that cannot exist; every problem is listed."""


@dataclass
class Sweep:
    config: dict[str, Any]
    specs: list[RunSpec] = field(default_factory=list)
    experiments: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """``peft_experiments``' settings: ``{method: {folder name: overrides}}``
    (:mod:`peftbench.planning.peft_experiments`)."""

    @property
    def methods(self) -> list[str]:
        """``methods``, then the methods only ``peft_experiments`` name."""
        listed = self.config["methods"]
        return [*listed, *(m for m in self.experiments if m not in listed)]

    def settings(self, method: str) -> dict[str, dict[str, Any]]:
        """The method's grid points by label, in grid order (``{"default": {}}`` without one),
        where ``methods`` lists it; then its experiment folders' settings."""
        axes = (self.config.get("grid") or {}).get(method)
        listed = method in self.config["methods"]
        points = {setting_label(p): p for p in grid_points(axes)} if listed else {}
        return {**points, **self.experiments.get(method, {})}

    def overrides(self, method: str, setting: str = DEFAULT_SETTING) -> dict[str, Any]:
        """Budget, then ``hparams``, then ``method_hparams``, then the grid point (later wins)."""
        return {
            **self.config["budget"],
            **(self.config.get("hparams") or {}),
            **((self.config.get("method_hparams") or {}).get(method) or {}),
            **self.settings(method)[setting],
        }

    @cached_property
    def by_run_id(self) -> dict[str, RunSpec]:
        return {spec.run_id: spec for spec in self.specs}

    def spec_json(self, **fields: Any) -> str:
        """The canonical JSON of the planned run whose id ``fields`` (the run pattern's
        wildcards: model, method, task, setting, seed) make: what its ``spec.json`` holds."""
        return self.by_run_id[RUN_PATTERN.format(**fields)].to_json()

    def data_dir(self, task: str) -> str | None:
        return (self.config.get("data_dirs") or {}).get(task)

    def data_dir_args(self, task: str) -> str:
        folder = self.data_dir(task)
        return f"--data-dir {shlex.quote(folder)}" if folder else ""

    @cached_property
    def model_for_tokenizer(self) -> dict[str, str]:
        """One model name per tokenizer key (any model with that tokenizer can tokenize)."""
        found: dict[str, str] = {}
        for model in self.config["models"]:
            found.setdefault(MODELS.get(model).tokenizer_key, model)
        return found

    def code_hash(self, model: str, method: str, task: str) -> str:
        return code_hash(model, method, task)

    def tokenize_hash(self, task: str, tokenizer: str) -> str:
        model = self.model_for_tokenizer[tokenizer]
        files = plugin_files(TASKS.get(task)) | plugin_files(MODELS.get(model))
        return f"{harness_hash()}-{hash_files(sorted(files))}"

    def reporting_hash(self) -> str:
        return reporting_hash()

    def resources(
        self, model: str, method: str, task: str, setting: str = DEFAULT_SETTING
    ) -> RunResources:
        """Host memory, wall time and GPUs for a run of ``model`` × ``method`` × ``setting`` on
        ``task`` (whose head decides the model built)."""
        gpus = self.gpus(model, method)
        hp = resolve_hparams(method, self.overrides(method, setting))
        try:
            size = footprint(model, method, task, hp)
        except Exception as error:  # an estimate never stops a sweep (e.g. hf: ids offline)
            log.warning("resources of %s × %s: defaults (%s)", model, method, error)
            return RunResources(FALLBACK["mem_mb"], FALLBACK["runtime_min"], gpus)
        threads = int(self.config.get("threads_per_run", 1))
        return estimate_resources(size, hp, gpus, threads)

    def mem_mb(self, model: str, method: str, task: str, setting: str) -> int:
        return self.resources(model, method, task, setting).mem_mb

    def runtime_min(self, model: str, method: str, task: str, setting: str) -> int:
        return self.resources(model, method, task, setting).runtime_min

    def gpus(self, model: str, method: str) -> int:
        """``gpus_per_run`` for every run (one training process per GPU)."""
        return int(self.config.get("gpus_per_run", 0))


def footprint(model: str, method: str, task: str, hp: dict[str, Any]) -> Footprint:
    """The size of ``model``'s task model for ``task`` adapted by ``method`` with the resolved
    ``hp``, from its meta-device build (:func:`~peftbench.planning.structure.task_model`:
    nothing is allocated or downloaded beyond the model's config). A method that does not apply
    to the model leaves it fully trainable: the run stops after loading, any estimate fits it."""
    from peftbench.planning.estimates import expected_memory, matmul_params
    from peftbench.planning.structure import task_model

    built = task_model(model, task, method, hp)
    info = built.info
    state = expected_memory(built.model, hp)
    parameters = list(built.model.parameters())
    return Footprint(
        weights_bytes=state["weights_bytes"],
        training_state_bytes=state["total_bytes"],
        matmul_params=matmul_params(built.model),
        trainable_params=sum(p.numel() for p in parameters if p.requires_grad),
        num_layers=info.num_layers,
        hidden_size=info.hidden_size,
        num_heads=getattr(built.config, "num_attention_heads", info.hidden_size // 64),
    )


def activation_bytes(size: Footprint, hp: dict[str, Any]) -> int:
    """Activations kept for the backward pass (Korthikanti et al., 2022, no recomputation:
    ``s·b·h·(34 + 5·a·s/h)`` bytes per layer in 16-bit, twice that in fp32)."""
    s, b, h, a = hp["max_length"], hp["batch_size"], size.hidden_size, size.num_heads
    per_layer = s * b * (34 * h + 5 * a * s)
    return size.num_layers * per_layer * (1 if hp["precision"] in HALF else 2)


def estimate_resources(
    size: Footprint, hp: dict[str, Any], gpus: int, threads: int
) -> RunResources:
    """Host memory: on GPUs, per GPU (one process each) the runtime plus CUDA plus the
    checkpoint loaded twice over; on the CPU, the runtime plus training state plus activations.
    Wall time: start-up, checkpoint read, and training plus evaluation FLOPs at a sustained rate
    (summed over GPUs), times a safety factor."""
    from peftbench.planning.estimates import training_flops_per_token

    if gpus:  # one process per GPU, each with its own runtime and copy of the checkpoint
        host = gpus * (RUNTIME_BYTES + CUDA_HOST_BYTES + 2 * size.weights_bytes)
        rate = gpus * GPU_FLOPS["half" if hp["precision"] in HALF else "fp32"]
    else:
        host = RUNTIME_BYTES + size.training_state_bytes + activation_bytes(size, hp)
        rate = CPU_FLOPS_PER_THREAD * threads
    train_tokens = hp["steps"] * hp["batch_size"] * hp["max_length"]
    eval_tokens = (hp["max_eval_examples"] or EVAL_EXAMPLES_IF_ALL) * hp["max_length"]
    flops = (
        train_tokens * training_flops_per_token(size.matmul_params, size.trainable_params)
        + eval_tokens * 2 * size.matmul_params
    )
    seconds = STARTUP_S + size.weights_bytes / LOAD_BYTES_PER_S + flops / rate
    return RunResources(
        mem_mb=math.ceil(MEMORY_SAFETY * host / MiB / 100) * 100,
        runtime_min=max(MIN_RUNTIME_MIN, math.ceil(TIME_SAFETY * seconds / 60)),
        gpus=gpus,
    )


def budget_problems(spec: RunSpec, sizes: dict[tuple[str, str | None], int | None]) -> list[str]:
    """Budgets no run could follow: a batch larger than the task's training examples left after
    the dev split is carved out (for tasks that count them at plan time, ``Task.train_size``;
    the runner drops incomplete batches, so nothing would train). ``sizes`` caches the counts
    per task and data folder over one planning."""
    from peftbench.planning.splits import train_examples

    key = (spec.task, spec.data_dir)
    try:
        if key not in sizes:
            sizes[key] = TASKS.get(spec.task).train_size(spec.data_dir)
    except TaskDataError as error:
        return [str(error)]
    size = sizes[key]
    batch = spec.hparams["batch_size"]
    left = None if size is None else train_examples(size)
    if left is not None and batch > left:
        return [
            f"batch_size={batch} for {spec.method}: larger than the {left} training examples of "
            f"task {spec.task!r} ({size} less the dev split); valid: 1 to {left}"
        ]
    return []


def hparam_problems(config: dict[str, Any]) -> list[str]:
    """Hyperparameter values no run reads, checked all the same: an ``hparams`` value that each
    method's own ``method_hparams`` (or grid) value shadows, ``method_hparams`` of a method the
    sweep does not run, and a ``method_hparams`` value a grid axis shadows. The runs' own values
    are checked when their specs are resolved. One problem per value, naming it."""
    budget, shared = config["budget"], config.get("hparams") or {}
    own = config.get("method_hparams") or {}
    grids = config.get("grid") or {}
    swept = [m for m in config["methods"] if m in METHODS]
    overridden = {m: {*(own.get(m) or {}), *(grids.get(m) or {})} for m in swept}
    problems = []
    for key, value in shared.items():
        for method in [m for m in swept if key in overridden[m]]:
            try:
                resolve_hparams(method, {**budget, key: value})
            except SpecError as error:
                problems.append(f"hparams: {error} (shadowed by {method}'s own {key}, but checked)")
                break
    for method, values in own.items():
        try:
            METHODS.check(method)
        except UnknownNameError as error:
            problems.append(f"method_hparams: {error}")
            continue
        keys = values or {}
        if method in swept:
            keys = {k: v for k, v in keys.items() if k in (grids.get(method) or {})}
        try:
            resolve_hparams(method, {**budget, **keys})
        except SpecError as error:
            problems.append(f"method_hparams: {error}")
    return problems


def grid_problems(config: dict[str, Any]) -> list[str]:
    """Grids over methods the sweep does not run, or over the tokenization length."""
    problems = []
    for method, axes in (config.get("grid") or {}).items():
        if method not in config["methods"]:
            problems.append(
                f"grid: method {method!r} is not in methods; valid: {', '.join(config['methods'])}"
            )
        if "max_length" in (axes or {}):
            problems.append(
                f"grid: {method}.max_length cannot vary (each task is tokenized once per "
                "length); set budget.max_length instead"
            )
    return problems


def plan_sweep(config: dict[str, Any]) -> Sweep:
    """Resolve every run of ``config``; raise :class:`SweepError` listing all bad values."""
    experiments, problems = experiment_settings(config.get("peft_experiments") or [])
    sweep = Sweep(config, experiments=experiments)
    problems += grid_problems(config) + hparam_problems(config)
    sizes: dict[tuple[str, str | None], int | None] = {}
    for model, method, task, seed in itertools.product(
        config["models"], sweep.methods, config["tasks"], config["seeds"]
    ):
        for setting in sweep.settings(method) if method in METHODS else [DEFAULT_SETTING]:
            try:
                spec = resolve_spec(
                    model,
                    method,
                    task,
                    seed,
                    sweep.overrides(method, setting),
                    sweep.data_dir(task),
                    setting,
                    int(config.get("gpus_per_run", 0)),
                )
            except (UnknownNameError, SpecError) as error:
                found = [str(error)]
            else:
                sweep.specs.append(spec)
                found = budget_problems(spec, sizes) + spec_problems(spec)
            problems += [problem for problem in found if problem not in problems]
    problems += [p for task in config["tasks"] if task in TASKS for p in task_problems(task)]
    unknown_dirs = set(config.get("data_dirs") or {}) - set(TASKS.names())
    problems += [
        f"data_dirs: unknown task {t!r}; valid tasks: {', '.join(TASKS.names())}"
        for t in sorted(unknown_dirs)
    ]
    problems += [
        f"data_dirs: {problem}"
        for task, folder in sorted((config.get("data_dirs") or {}).items())
        if folder and task in config["tasks"] and task in TASKS
        for problem in TASKS.get(task).data_dir_problems(folder)
    ]
    problems += [
        f"count_models: unknown model {m!r}; valid models: {', '.join(MODELS.names())}"
        for m in config.get("count_models") or []
        if m not in MODELS
    ]
    if problems:
        raise SweepError("invalid sweep configuration:\n  " + "\n  ".join(problems))
    return sweep
