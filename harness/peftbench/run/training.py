"""The training phase: the optimizer and its schedule, and the loop of ``steps`` optimizer
steps with its per-step measurements (docs/measurement.md)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from peftbench.run.heads import MODEL_INPUTS
from peftbench.run.measure import LossWatch, StepTimer, format_duration

if TYPE_CHECKING:
    from peftbench.run.state import RunState

log = logging.getLogger(__name__)


def param_groups(model, method, info, hp) -> list[dict[str, Any]]:
    """The trainable parameters as AdamW groups: the task head at ``head_lr`` when set."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not hp["head_lr"]:
        return [{"params": [p for _, p in trainable]}]
    head = [p for n, p in trainable if method.is_head(n, info)]
    rest = [p for n, p in trainable if not method.is_head(n, info)]
    groups = [{"params": rest}, {"params": head, "lr": hp["head_lr"]}]
    return [group for group in groups if group["params"]]


def optimizer_and_schedule(run: RunState) -> tuple[Any, Any]:
    """AdamW over the trainable parameters (or the method's own, ``Method.optimizer``) and the
    ``lr_scheduler`` schedule (transformers' ``get_scheduler``): ``warmup_ratio`` of the steps
    warm up, over ``steps`` in all."""
    import torch
    from transformers import get_scheduler

    hp = run.hp
    groups = param_groups(run.model, run.method, run.info, hp)
    optimizer = run.method.optimizer(run.model, hp, groups)  # the method's own (LoRA+, LoRA-FA)
    if optimizer is None:
        optimizer = torch.optim.AdamW(
            groups, lr=hp["lr"], weight_decay=hp["weight_decay"], **run.policy.optimizer_options()
        )
    scheduler = get_scheduler(
        hp["lr_scheduler"],
        optimizer,
        num_warmup_steps=math.ceil(hp["warmup_ratio"] * hp["steps"]),
        num_training_steps=hp["steps"],
    )
    return optimizer, scheduler


@dataclass
class Trained:
    """What the loop measured: every step's loss, seconds, examples and non-padding tokens."""

    losses: list[float]
    step_seconds: list[float]
    samples: list[int]
    tokens: list[int]


@dataclass
class Progress:
    """The progress log: about ten lines a run (every ``steps // 10`` steps, and at the last),
    each with the step, the mean loss and the samples/s since the previous line, the time
    elapsed and the time left."""

    steps: int
    every: int
    began: float = field(default_factory=time.perf_counter)
    last_step: int = 0
    last_time: float = 0.0

    def __post_init__(self) -> None:
        self.last_time = self.began

    def due(self, done: int) -> bool:
        return done % self.every == 0 or done == self.steps

    def log(self, done: int, watch: LossWatch, samples: list[int]) -> None:
        mean = watch.mean_since(self.last_step)  # the sum just read: no further sync
        now = time.perf_counter()
        elapsed = now - self.began
        log.info(
            "step %d/%d  loss %.4f  %.1f samples/s  elapsed %s  eta %s",
            done,
            self.steps,
            mean,
            sum(samples[self.last_step :]) / (now - self.last_time),
            format_duration(elapsed),
            format_duration(elapsed / done * (self.steps - done)),
        )
        self.last_step, self.last_time = done, now


class Batches:
    """The training loader cycled: a new pass (a new shuffle) when one ends."""

    def __init__(self, loader) -> None:
        self.loader = loader
        self._batches = iter(loader)

    def next(self) -> dict[str, Any]:
        try:
            return next(self._batches)
        except StopIteration:
            self._batches = iter(self.loader)
            return next(self._batches)


def train(run: RunState) -> Trained:
    """Train for ``hp["steps"]`` optimizer steps, cycling over the data; per-step measurements.
    No step waits for the device: steps are timed by :class:`StepTimer`, losses and token counts
    stay on the device until the end, and :class:`LossWatch` checks the losses for NaN or inf
    at each progress line (:class:`Progress`)."""
    import torch

    steps = run.hp["steps"]
    progress = Progress(steps, max(1, steps // 10))
    run.model.train()
    timer, watch = StepTimer(run.device), LossWatch(progress.every)
    samples, tokens = [], []
    batches = Batches(run.loaders[0])
    try:
        for step in range(steps):
            batch = batches.next()
            timer.start()
            loss = _step(run, batch, step)
            timer.stop()
            watch.add(loss)  # every `every` steps: NonFiniteLoss naming the first bad step
            samples.append(int(batch["labels"].shape[0]))
            tokens.append(batch["attention_mask"].sum())
            if progress.due(step + 1):
                progress.log(step + 1, watch, samples)
    except Exception:
        watch.check()  # a loss that went NaN before the failure: the run diverged
        raise
    return Trained(watch.values(), timer.seconds(), samples, torch.stack(tokens).tolist())


def _step(run: RunState, batch: dict[str, Any], step: int) -> Any:
    """One optimizer step on ``batch`` (``step`` counts from 0); its loss, on the device."""
    model, optimizer, max_norm = run.model, run.optimizer, run.hp["max_grad_norm"]
    with run.policy.autocast():  # the forward only; backward runs outside autocast
        loss = model(**{k: v for k, v in batch.items() if k in MODEL_INPUTS}).loss
    run.accelerator.backward(loss)
    if max_norm:  # 0: no clipping
        run.accelerator.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    run.scheduler.step()
    run.method.on_step(model, step + 1)
    optimizer.zero_grad(set_to_none=True)
    return loss
