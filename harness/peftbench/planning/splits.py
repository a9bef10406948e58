"""The fixed dev split carved from each task's training split: its size, decided at plan time
(the planner budgets epochs from the training rows left) and carved by the run's data layer."""

from __future__ import annotations

import math

DEV_FRACTION = 0.15
"""Share of each task's training split held out as the ``dev`` split, on which the aggregate
step selects hyperparameters; the ``validation`` split is only ever reported."""
DEV_MAX_EXAMPLES = 1000
"""At most this many dev examples (SST-2's 15% would be 9,093: scoring them took 7× the
validation split's time, for a selection that 1,000 examples make as well)."""
DEV_SEED = 0
"""The dev split is the same for every run, seed and setting."""


def dev_examples(size: int) -> int:
    """Rows of a training split of ``size`` rows that the dev split takes."""
    return min(math.ceil(DEV_FRACTION * size), DEV_MAX_EXAMPLES)


def train_examples(size: int) -> int:
    """Training examples left of ``size`` once the dev split is carved out."""
    return size - dev_examples(size)
