"""The training phase: the optimizer and its schedule, and the loop of ``steps`` optimizer
steps with its per-step measurements (docs/measurement.md) and its checkpoints
(:mod:`peftbench.run.checkpoint`)."""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from peftbench.run import checkpoint
from peftbench.run.checkpoint import SAVE, STOP, Checkpointed, Segments, Signals, restore_rng_states
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
    """What the loop measured, over every process of the run: each step's loss, seconds,
    examples and non-padding tokens, and the processes' accounting (:class:`Segments`)."""

    losses: list[float]
    step_seconds: list[float]
    samples: list[int]
    tokens: list[int]
    segments: Segments
    from_step: int | None
    """The step the last resume began at; ``None`` for a run that did not resume."""


@dataclass
class Progress:
    """The progress log: about ten lines a run (every ``steps // 10`` steps, and at the last),
    each with the step, the mean loss and the samples/s since the previous line, the time
    elapsed and the time left."""

    steps: int
    every: int
    last_step: int = 0
    began: float = field(default_factory=time.perf_counter)
    last_time: float = 0.0

    def __post_init__(self) -> None:
        self.first, self.last_time = self.last_step, self.began

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
            format_duration(elapsed / (done - self.first) * (self.steps - done)),
        )
        self.last_step, self.last_time = done, now


class Batches:
    """The training loader cycled: a new pass (a new shuffle) when one ends. Its
    :meth:`position` (the pass, the batches taken in it, the loader's generator as the pass
    began) puts a new one at the same place: the pass's shuffle drawn again, the batches taken
    skipped."""

    def __init__(self, loader, position: dict[str, Any] | None = None) -> None:
        self.loader, self.generator = loader, loader.generator
        self.epoch, self.taken = 0, 0
        if position is not None:
            self.epoch = position["epoch"]
            self.generator.set_state(position["generator"])
        self._begin()
        for _ in range(position["batch"] if position else 0):
            self.next()

    def _begin(self) -> None:
        self.began = self.generator.get_state()
        self._batches = iter(self.loader)

    def next(self) -> dict[str, Any]:
        try:
            batch = next(self._batches)
        except StopIteration:
            self.epoch, self.taken = self.epoch + 1, 0
            self._begin()
            batch = next(self._batches)
        self.taken += 1
        return batch

    def position(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch": self.taken, "generator": self.began}


class Loop:
    """The training loop's state: the batches, the per-step measurements (with those of the
    run's earlier processes when it resumed) and the checkpoints' schedule."""

    def __init__(self, run: RunState) -> None:
        self.run, self.steps = run, run.hp["steps"]
        resumed = run.resume
        self.earlier = resumed.segments if resumed else Segments()
        self.done = resumed.step if resumed else 0
        self.progress = Progress(self.steps, max(1, self.steps // 10), self.done)
        self.timer, self.watch = StepTimer(run.device), LossWatch(self.progress.every)
        self.samples, self.tokens = list(self.earlier.samples), []
        self.batches = Batches(run.loaders[0], resumed.data if resumed else None)
        self.checkpoints, self.checkpoint_s = 0, 0.0
        self.restart_s = 0.0
        if resumed:
            for loss in resumed.losses.to(run.device):
                self.watch.add(loss)
            self.watch.check()  # the sum the progress log starts from
            self.earlier.starts.append(self.done)
            restore_rng_states(resumed.rng)  # last: the next step draws what it drew then
            self.restart_s = time.perf_counter() - run.started
        self.began = self.last_checkpoint = time.perf_counter()
        self.every_steps = run.hp["checkpoint_every_steps"]
        self.every_s = run.hp["checkpoint_every_minutes"] * 60

    def add(self, loss: Any, batch: dict[str, Any]) -> None:
        """One step's measurements; the progress line when due."""
        self.done += 1
        self.watch.add(loss)  # every `every` steps: NonFiniteLoss naming the first bad step
        self.samples.append(int(batch["labels"].shape[0]))
        self.tokens.append(batch["attention_mask"].sum())
        if self.progress.due(self.done):
            self.progress.log(self.done, self.watch, self.samples)

    def checkpoint_reason(self, signals: Signals) -> str | None:
        """Why a checkpoint is due after this step, if one is: a signal, or the steps or
        minutes since the last (none after the last step: evaluation follows at once)."""
        received = signals.take()
        for signum in (STOP, SAVE):
            if signum in received:
                return signum.name
        if self.done == self.steps:
            return None
        if self.every_steps and self.done % self.every_steps == 0:
            return "steps"
        if self.every_s and time.perf_counter() - self.last_checkpoint >= self.every_s:
            return "minutes"
        return None

    def checkpoint(self, reason: str) -> None:
        """Write the checkpoint; after ``SIGTERM``, stop (:class:`Checkpointed`)."""
        self.checkpoints += 1
        self.checkpoint_s += checkpoint.save(self.run, self, reason)
        self.last_checkpoint = time.perf_counter()
        if reason == STOP.name:
            stopped = Checkpointed(self.done, self.steps, checkpoint.path_of(self.run))
            log.warning("%s", stopped)
            raise stopped

    def losses_so_far(self) -> Any:
        """Every step's loss so far, float64, on the CPU."""
        import torch

        return torch.tensor(self.watch.values(), dtype=torch.float64)

    def segments_so_far(self, peaks: dict[str, int | None], training_s: float) -> Segments:
        """Every process's measurements up to now, with ``training_s`` seconds of this one's
        training and the train phase's ``peaks`` so far."""
        import torch

        earlier = self.earlier
        memory = dict(earlier.memory)
        for key, value in (peaks or {}).items():
            if value is not None:
                memory[key] = max(value, memory.get(key, 0))
        tokens = torch.stack(self.tokens).tolist() if self.tokens else []
        return Segments(
            step_seconds=earlier.step_seconds + self.timer.seconds(),
            samples=list(self.samples),
            tokens=earlier.tokens + tokens,
            starts=list(earlier.starts),
            train_s=earlier.train_s + training_s,
            checkpoints=earlier.checkpoints + self.checkpoints,
            checkpoint_s=earlier.checkpoint_s + self.checkpoint_s,
            restart_s=earlier.restart_s + self.restart_s,
            lost_known=earlier.lost_known,
            memory=memory,
        )

    def training_s(self) -> float:
        """This process's training seconds so far."""
        return time.perf_counter() - self.began

    def trained(self) -> Trained:
        """The measurements; the segments' ``train_s`` the earlier processes' (this one's is
        the train phase's own)."""
        segments = self.segments_so_far({}, 0.0)
        from_step = self.earlier.starts[-1] if len(self.earlier.starts) > 1 else None
        return Trained(
            self.watch.values(), segments.step_seconds, segments.samples, segments.tokens,
            segments, from_step,
        )  # fmt: skip


def train(run: RunState) -> Trained:
    """Train for ``hp["steps"]`` optimizer steps, cycling over the data (from a checkpoint's
    step where the run resumes); per-step measurements. No step waits for the device: steps
    are timed by :class:`StepTimer`, losses and token counts stay on the device until the end,
    and :class:`LossWatch` checks the losses for NaN or inf at each progress line
    (:class:`Progress`). Between steps, a checkpoint when one is due (:mod:`~.checkpoint`)."""
    run.model.train()
    loop = Loop(run)
    with Signals() if run.checkpoint_off is None else nullcontext(None) as signals:
        try:
            for step in range(loop.done, loop.steps):
                batch = loop.batches.next()
                loop.timer.start()
                loss = _step(run, batch, step)
                loop.timer.stop()
                loop.add(loss, batch)
                reason = signals and loop.checkpoint_reason(signals)
                if reason:
                    loop.checkpoint(reason)
        except Exception:
            loop.watch.check()  # a loss that went NaN before the failure: the run diverged
            raise
    return loop.trained()


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
