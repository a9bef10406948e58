"""The state one run carries from phase to phase (:mod:`peftbench.run.runner`).

Each phase of a run is a short function over one :class:`RunState`: it reads what the phases
before it set and sets what it makes. Fields are ``None`` until the phase that makes them ran.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from peftbench.planning.spec import RunSpec
    from peftbench.run.checkpoint import Resume
    from peftbench.run.heads import Scored, TaskHead
    from peftbench.run.precision import Policy


@dataclass
class RunState:
    """One run's inputs, the objects its phases build, and its record."""

    spec: RunSpec
    out_dir: Path
    record: dict[str, Any]
    tokenized_dir: str | None = None
    threads: int | None = None
    lock_dir: str | Path | None = None
    save_artifacts: bool = False
    method: Any = None
    task: Any = None
    source: Any = None
    head: TaskHead | None = None
    """How the task's head is trained on, scored and written out (:mod:`peftbench.run.heads`)."""
    device: str = "cpu"
    policy: Policy | None = None
    data: Any = None
    meta: dict[str, Any] = field(default_factory=dict)
    loaded: Any = None
    """What the model source loaded: ``model``, ``info``, ``fingerprint``."""
    model: Any = None
    base: Any = None
    """The base parameter values the counts compare against (:func:`~.counting.adapt`)."""
    tokenizer: Any = None
    """Language-model heads: the tokenizer generation, forgetting and serving decode with."""
    accelerator: Any = None
    optimizer: Any = None
    scheduler: Any = None
    loaders: tuple[Any, Any, Any] | None = None
    """Train, validation and dev: loaders, or rows where the head scores rows."""
    forget: dict[str, Any] = field(default_factory=dict)
    """Language-model heads: the general-text sample and the base's cross-entropy on it."""
    scored: Scored | None = None
    """The validation split's predictions, references and timings."""
    dev_scored: Scored | None = None
    checkpoint_off: str | None = None
    """Why the run writes no checkpoints (``None``: it does; :mod:`peftbench.run.checkpoint`)."""
    resume: Resume | None = None
    """The checkpoint the run resumed from, where it did."""
    started: float = field(default_factory=time.perf_counter)
    """When this process began the run (``time.perf_counter``)."""

    @property
    def hp(self) -> dict[str, Any]:
        return self.spec.hparams

    @property
    def precision(self) -> str:
        return self.policy.precision

    @property
    def info(self) -> Any:
        return self.loaded.info

    @property
    def mergeable(self) -> bool:
        """Whether the method may merge into the base: not into a quantized one, which would
        be requantized and change the outputs."""
        from peftbench.plugin.quantize import BITS

        return self.precision not in BITS

    def unwrapped(self) -> Any:
        """The trained model without accelerate's wrappers."""
        return self.accelerator.unwrap_model(self.model)
