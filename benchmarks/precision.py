"""bf16 against fp32 training steps under the precision policy (peftbench.run.precision), one
thread, same model, data and batches, configurations interleaved step by step in one process.
Prints per method the median step time of fp32 and bf16 and their ratio; targets on minilm-l6
on an AMX CPU: full >= 2.5, lora >= 2. ``--current`` adds the runner's pre-policy paths
(accelerate's autocast over fp32 weights with SDPA attention, for-loop AdamW); ``--compile``
the policy's paths with the model under ``torch.compile`` (inductor), and the time of each
configuration's first step, compilation included; ``--profile`` where a step's time goes;
``--accuracy`` the validation accuracy of whole runs of each.

    python benchmarks/precision.py [--steps 20] [--repeats 3] [--methods full,lora]
        [--model minilm-l6] [--current] [--compile] [--profile] [--accuracy] [--seeds 1]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import torch
from torch.utils.data import DataLoader

from peftbench.planning.counting import adapt
from peftbench.planning.spec import resolve_hparams
from peftbench.plugin.registry import METHODS, MODELS, TASKS
from peftbench.run import heads
from peftbench.run.data import tokenize_task
from peftbench.run.precision import Policy

WARMUP = 3  # the runner's WARMUP_STEPS_EXCLUDED
TIMING_TASK = "docstring-module"
ACCURACY_TASKS = ("docstring-module", "docstring-match")
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class Trainer:
    """One configuration: model, optimizer and schedule prepared as a run would prepare them."""

    name: str
    model: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    autocast: Any  # () -> context manager

    def step(self, batch: dict[str, torch.Tensor]) -> float:
        """One optimizer step as the runner times it; the loss."""
        with self.autocast():
            loss = self.model(**{k: v for k, v in batch.items() if k in (*INPUTS, "labels")}).loss
        value = loss.item()
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return value

    @torch.no_grad()
    def accuracy(self, loader: DataLoader) -> float:
        self.model.eval()
        right = total = 0
        for batch in loader:
            with self.autocast():
                logits = self.model(**{k: v for k, v in batch.items() if k in INPUTS}).logits
            right += int((logits.argmax(-1) == batch["labels"]).sum())
            total += len(batch["labels"])
        self.model.train()
        return right / total


def build(
    config: str, model_name: str, method_name: str, task: str, hp: dict[str, Any], seed: int
) -> Trainer:
    """``config``: ``fp32`` / ``bf16`` (the policy), ``fp32-current`` / ``bf16-current`` (the
    pre-policy paths) or ``fp32-compiled`` / ``bf16-compiled`` (the policy, compiled model)."""
    from transformers import get_linear_schedule_with_warmup

    precision, _, variant = config.partition("-")
    current = variant == "current"
    policy = Policy(precision, "cpu")
    torch.manual_seed(seed)
    loaded = MODELS.get(model_name).load(num_labels=TASKS.get(task).num_labels)
    if not current:
        policy.prepare_base(loaded.model)
    model, _ = adapt(loaded.model, METHODS.get(method_name), hp, loaded.info)
    if not current:
        policy.prepare_adapted(model)
    options = {} if current else policy.optimizer_options()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=hp["lr"],
        weight_decay=hp["weight_decay"],
        **options,
    )
    scheduler = get_linear_schedule_with_warmup(
        optimizer, math.ceil(hp["warmup_ratio"] * hp["steps"]), hp["steps"]
    )
    if current:  # what accelerate's mixed_precision="bf16" wraps the forward in on the CPU
        autocast = (
            (lambda: torch.autocast("cpu", dtype=torch.bfloat16))
            if precision == "bf16"
            else contextlib.nullcontext
        )
    else:
        autocast = policy.autocast
    model.train()
    if variant == "compiled":  # the forward and, through AOTAutograd, the backward
        model = torch.compile(model)
    return Trainer(config, model, optimizer, scheduler, autocast)


def loaders(model_name: str, task: str, hp: dict[str, Any], seed: int) -> tuple[DataLoader, ...]:
    """Train and validation loaders, made the way a run makes them (``heads.loaders``)."""
    data, _ = tokenize_task(task, model_name, hp["max_length"])
    head = heads.for_head(TASKS.get(task).head)
    train, validation, _ = heads.loaders(data, MODELS.get(model_name), hp, seed, head)
    return train, validation


def cycle(loader: DataLoader) -> Iterator[dict[str, torch.Tensor]]:
    while True:
        yield from loader


def time_steps(
    trainers: list[Trainer], loader: DataLoader, steps: int, repeats: int
) -> tuple[dict[tuple[str, str], list[float]], dict[str, float]]:
    """Per configuration and clock (``wall``; ``cpu``: this thread's CPU time, which time spent
    waiting for a shared core does not inflate), the median step time of each repeat; every
    configuration takes the same batch in turn (A B A B ...), after :data:`WARMUP` untimed
    steps each. Second, per configuration, the wall time of those untimed steps (compilation
    happens there)."""
    batches = cycle(loader)
    warmup: dict[str, float] = defaultdict(float)
    for _ in range(WARMUP):
        batch = next(batches)
        for trainer in trainers:
            start = time.perf_counter()
            trainer.step(batch)
            warmup[trainer.name] += time.perf_counter() - start
    medians: dict[tuple[str, str], list[float]] = defaultdict(list)
    for _ in range(repeats):
        times: dict[tuple[str, str], list[float]] = defaultdict(list)
        for _ in range(steps):
            batch = next(batches)
            for trainer in trainers:
                start, cpu = time.perf_counter(), time.thread_time()
                trainer.step(batch)
                times[trainer.name, "wall"].append(time.perf_counter() - start)
                times[trainer.name, "cpu"].append(time.thread_time() - cpu)
        for name, values in times.items():
            medians[name].append(statistics.median(values))
    return medians, dict(warmup)


CATEGORIES = (
    ("optimizer", lambda name, ancestors: any(a.startswith("Optimizer.") for a in ancestors)),
    ("matmul", lambda name, _: name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")),
    ("attention kernel", lambda name, _: "scaled_dot_product" in name),
    ("casts, copies", lambda name, _: name in ("aten::copy_", "aten::_to_copy", "aten::clone")),
    ("zero-fill (embedding grad)", lambda name, _: name in ("aten::fill_", "aten::zero_")),
    ("dropout masks (bernoulli_)", lambda name, _: name == "aten::bernoulli_"),
    ("elementwise, norms, other", lambda name, _: True),
)
"""Where a profiled op's self time goes: the first category that claims it."""


def profile(trainer: Trainer, loader: DataLoader, steps: int) -> dict[str, float]:
    """Seconds per step by category (:data:`CATEGORIES`) over ``steps`` profiled steps."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    batches = list(islice(cycle(loader), steps + WARMUP))
    for batch in batches[:WARMUP]:
        trainer.step(batch)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for batch in batches[WARMUP:]:
            trainer.step(batch)
        wall = time.perf_counter() - start
    seconds: dict[str, float] = defaultdict(float)
    for event in prof.events():
        ancestors, parent = [], event.cpu_parent
        while parent is not None:
            ancestors.append(parent.name)
            parent = parent.cpu_parent
        category = next(c for c, claims in CATEGORIES if claims(event.name, ancestors))
        seconds[category] += event.self_cpu_time_total / 1e6 / steps
    seconds["(wall time per step)"] = wall / steps
    return dict(seconds)


def data_seconds(loader: DataLoader, batches: int = 20) -> float:
    """Median seconds to draw and collate one training batch (outside the timed step)."""
    times, iterator = [], iter(loader)
    for _ in range(batches):
        start = time.perf_counter()
        next(iterator)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_accuracy(model_name: str, method: str, task: str, config: str, seed: int) -> float:
    """Validation accuracy after a run's whole training budget (the method's defaults)."""
    hp = resolve_hparams(method)
    train, validation = loaders(model_name, task, hp, seed)
    trainer = build(config, model_name, method, task, hp, seed)
    for batch in islice(cycle(train), hp["steps"]):
        trainer.step(batch)
    return trainer.accuracy(validation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--methods", default="full,lora")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--current", action="store_true", help="also the pre-policy paths")
    parser.add_argument("--compile", action="store_true", help="also the compiled paths")
    parser.add_argument("--profile", action="store_true", help="where a step's time goes")
    parser.add_argument("--accuracy", action="store_true", help="accuracy on the two tasks")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per accuracy figure")
    args = parser.parse_args()
    torch.set_num_threads(1)
    configs = ["fp32", "bf16"] + (["fp32-current", "bf16-current"] if args.current else [])
    configs += ["fp32-compiled", "bf16-compiled"] if args.compile else []
    for method in args.methods.split(","):
        hp = resolve_hparams(method)
        train, _ = loaders(args.model, TIMING_TASK, hp, 0)
        trainers = [build(c, args.model, method, TIMING_TASK, hp, 0) for c in configs]
        timed, warmup = time_steps(trainers, train, args.steps, args.repeats)
        median = {key: statistics.median(values) for key, values in timed.items()}
        target = 2.5 if method == "full" else 2.0
        for clock in ("wall", "cpu"):
            for config in configs:
                print(f"{method} {config} step median ({clock}): {median[config, clock]:.4f} s")
            print(
                f"{method} bf16/fp32 step-throughput ratio ({clock}, target >= {target}): "
                f"{median['fp32', clock] / median['bf16', clock]:.2f}"
            )
            if args.current:
                print(
                    f"{method} ratio ({clock}) pre-policy bf16/fp32: "
                    f"{median['fp32-current', clock] / median['bf16-current', clock]:.2f}, "
                    f"policy bf16 / pre-policy fp32: "
                    f"{median['fp32-current', clock] / median['bf16', clock]:.2f}"
                )
            if args.compile:
                print(
                    f"{method} ratio ({clock}) compiled bf16/fp32: "
                    f"{median['fp32-compiled', clock] / median['bf16-compiled', clock]:.2f}, "
                    f"compiled bf16 / eager fp32: "
                    f"{median['fp32', clock] / median['bf16-compiled', clock]:.2f}, "
                    f"compiled fp32 / eager fp32: "
                    f"{median['fp32', clock] / median['fp32-compiled', clock]:.2f}"
                )
        for config in configs:
            print(f"{method} {config} first {WARMUP} steps (wall): {warmup[config]:.1f} s")
        if args.profile:
            print(f"{method} data (draw and collate a batch): {data_seconds(train):.4f} s")
            for trainer in trainers[:2]:
                for category, seconds in profile(trainer, train, args.steps).items():
                    print(f"{method} {trainer.name} profile {category}: {seconds:.4f} s/step")
        del trainers
    if args.accuracy:
        for method in args.methods.split(","):
            for task in ACCURACY_TASKS:
                for config in ("fp32", "bf16"):
                    scores = [
                        run_accuracy(args.model, method, task, config, seed)
                        for seed in range(args.seeds)
                    ]
                    spread = f" ± {statistics.stdev(scores):.3f}" if len(scores) > 1 else ""
                    print(
                        f"{method} {task} {config} validation accuracy: "
                        f"{statistics.mean(scores):.3f}{spread} ({len(scores)} seeds)"
                    )


if __name__ == "__main__":
    main()
