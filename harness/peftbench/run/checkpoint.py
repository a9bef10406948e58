"""Checkpoints: the training state of a run, written beside its record so that a rerun of the
same spec in the same folder resumes where it stopped (docs/runs.md, "Checkpoints and resume").

One file, :data:`CHECKPOINT_FILE`, written atomically (a temporary file renamed over it) with
``torch.save`` and read with ``torch.load(weights_only=True)``: tensors and plain values only.
It holds the trainable parameters (the task head among them whenever it trains), the optimizer,
the schedule and the fp16 loss scaler, every random generator's state (Python, NumPy, torch's
CPU and CUDA generators), the data position (the pass over the training data, the batches taken
in it, and the loader's generator as that pass began) and what the loop measured so far. A
rerun that finds it, for the same spec, code and inputs, continues from it bit for bit on the
CPU.

When: every ``checkpoint_every_steps`` steps, every ``checkpoint_every_minutes`` minutes of
training, and at the first step boundary after ``SIGUSR1`` (then training goes on) or
``SIGTERM`` (then the process exits with :data:`EXIT_CHECKPOINTED`, no record written).
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftbench.plugin.method import Method
from peftbench.records.files import current_umask

if TYPE_CHECKING:
    from peftbench.run.state import RunState

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = 1
"""Version of the checkpoint's layout; a file of another version is not resumed from."""
EXIT_CHECKPOINTED = 75
"""Exit status after a checkpoint on ``SIGTERM``: ``EX_TEMPFAIL`` of ``sysexits.h``, a
temporary failure: rerunning the same command resumes."""
CHECKPOINT_HPARAMS = ("checkpoint_every_steps", "checkpoint_every_minutes")
"""Hyperparameters that decide only when checkpoints are written: a rerun that changes them
still resumes."""
STOP, SAVE = signal.SIGTERM, signal.SIGUSR1
"""Checkpoint, then exit; checkpoint, then go on."""


class Checkpointed(SystemExit):
    """Training stopped at a step boundary on ``SIGTERM`` after writing a checkpoint: no record
    is written and the process exits with :data:`EXIT_CHECKPOINTED` (a :class:`SystemExit`, so
    no handler mistakes it for a result of the run)."""

    def __init__(self, step: int, steps: int, path: Path) -> None:
        super().__init__(EXIT_CHECKPOINTED)
        self.step, self.steps, self.path = step, steps, path
        self.message = (
            f"checkpointed at step {step} of {steps} on SIGTERM ({path}): no record written; "
            f"rerun the same spec with the same --out to resume (exit status {EXIT_CHECKPOINTED})"
        )

    def __str__(self) -> str:
        return self.message


def unavailable_reason(run: RunState) -> str | None:
    """Why this run cannot checkpoint (``None`` when it can): the state a checkpoint holds must
    be all the state training changes."""
    if run.accelerator.num_processes > 1:
        return "runs of several processes do not checkpoint"
    if type(run.method).on_step is not Method.on_step:
        return (
            f"{run.spec.method} changes state outside its parameters after each step "
            "(Method.on_step), which a checkpoint does not hold"
        )
    return None


class Signals:
    """While entered, ``SIGTERM`` and ``SIGUSR1`` only set :attr:`received`; the training loop
    acts on them at its next step boundary. Outside the main thread nothing is caught. A
    ``SIGTERM`` the loop did not act on is delivered again, with its previous handler, on
    exit."""

    def __init__(self) -> None:
        self.received: set[int] = set()
        self.handled: set[int] = set()
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.received.add(signum)

    def take(self) -> set[int]:
        """The signals received since the last call."""
        taken = self.received - self.handled
        self.handled |= taken
        return taken

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            for signum in (STOP, SAVE):
                self._previous[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        if STOP in self.received - self.handled:  # arrived after the last step: not lost
            os.kill(os.getpid(), STOP)


@dataclass
class Segments:
    """What the earlier processes of a resumed run measured: per step (seconds, examples,
    tokens), the step each process began at, the training seconds they spent up to their last
    checkpoint, the checkpoints written and their seconds, the seconds resumed processes spent
    before training again, whether the training that interruptions threw away is known (only
    where each interruption checkpointed, on ``SIGTERM``), and the train phase's peaks."""

    step_seconds: list[float] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    starts: list[int] = field(default_factory=lambda: [0])
    train_s: float = 0.0
    checkpoints: int = 0
    checkpoint_s: float = 0.0
    restart_s: float = 0.0
    lost_known: bool = True
    memory: dict[str, int] = field(default_factory=dict)


@dataclass
class Resume:
    """A checkpoint read back: the step it was written after, the states to restore, and the
    measurements of the processes before (:class:`Segments`)."""

    step: int
    losses: Any
    data: dict[str, Any]
    rng: dict[str, Any]
    segments: Segments


def identity(run: RunState) -> dict[str, Any]:
    """What a checkpoint must match to be resumed from: the spec (less
    :data:`CHECKPOINT_HPARAMS`), the code, the data and the weights."""
    spec = run.spec.to_dict()
    spec["hparams"] = {k: v for k, v in spec["hparams"].items() if k not in CHECKPOINT_HPARAMS}
    provenance = run.record["provenance"]
    keys = ("code_hash", "data_fingerprint", "model_fingerprint")
    return {"format": FORMAT, "spec": spec, **{k: provenance[k] for k in keys}}


def path_of(run: RunState) -> Path:
    return run.out_dir / CHECKPOINT_FILE


def rng_states() -> dict[str, Any]:
    """Every random generator's state, in ``weights_only``-loadable form."""
    import random

    import numpy as np
    import torch

    numpy = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {**numpy, "state": {**numpy["state"], "key": numpy["state"]["key"].tolist()}},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    import random

    import numpy as np
    import torch

    random.setstate(states["python"])
    numpy = states["numpy"]
    key = np.array(numpy["state"]["key"], dtype=np.uint32)
    np.random.set_state({**numpy, "state": {**numpy["state"], "key": key}})
    torch.set_rng_state(states["torch"])
    if states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])


def trainable_state(model) -> dict[str, Any]:
    """The parameters that train, by name, copied to the CPU."""
    return {
        name: p.detach().to("cpu", copy=True)
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def write(path: Path, payload: dict[str, Any]) -> None:
    """``payload`` saved to ``path`` atomically (temporary file, fsync, rename), with the mode
    ``open()`` would give a new file."""
    import torch

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(run: RunState, loop: Any, reason: str) -> float:
    """Write the checkpoint of ``run`` after ``loop.done`` steps; its seconds."""
    from peftbench.run.measure import peak_memory

    started, started_at = time.perf_counter(), time.time()
    model = run.unwrapped()
    scaler = getattr(run.accelerator, "scaler", None)
    segments = loop.segments_so_far(peak_memory(run.device), loop.training_s())
    payload = {
        **identity(run),
        "step": loop.done,
        "reason": reason,
        "started_at": started_at,
        "trainable": trainable_state(model),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_states(),
        "data": loop.batches.position(),
        "losses": loop.losses_so_far(),
        "segments": asdict(segments),
    }
    write(path_of(run), payload)
    seconds = time.perf_counter() - started
    log.info("checkpoint at step %d (%s) in %.2fs: %s", loop.done, reason, seconds, path_of(run))
    return seconds


def read(run: RunState) -> dict[str, Any] | None:
    """The checkpoint in the run's folder if it is one of this run (same spec, code, data and
    weights); ``None`` if there is none. Another run's is removed, naming what differs."""
    import torch

    path = path_of(run)
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a file no checkpoint of this version wrote
        log.warning("%s cannot be read (%s): starting over", path, error)
        path.unlink()
        return None
    expected = identity(run)
    differs = [key for key in expected if payload.get(key) != expected[key]]
    if differs:
        log.warning("%s is of another run (%s differ): starting over", path, ", ".join(differs))
        path.unlink()
        return None
    return payload


def restore(run: RunState) -> Resume | None:
    """Load the run's checkpoint into the prepared model, optimizer, schedule and scaler;
    what the loop restores itself (data position, generators, measurements) is returned."""
    import torch

    payload = read(run)
    if payload is None:
        return None
    parameters = dict(run.unwrapped().named_parameters())
    trainable = {n for n, p in parameters.items() if p.requires_grad}
    if trainable != set(payload["trainable"]):
        raise RuntimeError(f"{path_of(run)}: its parameters are not the ones this run trains")
    with torch.no_grad():
        for name, tensor in payload["trainable"].items():
            parameters[name].copy_(tensor)
    run.optimizer.load_state_dict(payload["optimizer"])
    run.scheduler.load_state_dict(payload["scheduler"])
    if payload["scaler"] is not None:
        run.accelerator.scaler.load_state_dict(payload["scaler"])
    segments = Segments(**payload["segments"])
    writing = max(0.0, path_of(run).stat().st_mtime - payload["started_at"])  # its own write
    segments.train_s += writing
    segments.checkpoint_s += writing
    if payload["reason"] != STOP.name:  # the process went on after it: what it did is lost
        segments.lost_known = False
    log.info("resuming from %s at step %d", path_of(run), payload["step"])
    return Resume(payload["step"], payload["losses"], payload["data"], payload["rng"], segments)


def remove(out_dir: Path) -> None:
    """The checkpoint is spent once the record is written."""
    (Path(out_dir) / CHECKPOINT_FILE).unlink(missing_ok=True)
