"""Hyperparameter grids: a method's sweep axes expanded into named settings.

A grid maps hyperparameter names to lists of values (``{"lr": [1e-3, 5e-3], "r": [4, 8]}``);
every combination is one *setting*, run for every seed and named by a label such as
``lr=0.001,r=4`` that is also the setting's folder name. The aggregate step picks one setting
per model × method × task by its dev-split score (``reporting.aggregate.select_settings``).
"""

from __future__ import annotations

import hashlib
import itertools
import re
from typing import Any

DEFAULT_SETTING = "default"
"""The label of the single setting of a method without a grid."""
LABEL_CHARS = "A-Za-z0-9._=,+-"
"""What a setting label may contain (it names a folder and a Snakemake wildcard)."""
LABEL = re.compile(f"[{LABEL_CHARS}]+")


def grid_points(axes: dict[str, list[Any]] | None) -> list[dict[str, Any]]:
    """Every combination of the axes' values, axes in name order, values in the given order."""
    if not axes:
        return [{}]
    names = sorted(axes)
    combinations = itertools.product(*(axes[n] for n in names))
    return [dict(zip(names, values, strict=True)) for values in combinations]


def format_value(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


def setting_label(point: dict[str, Any]) -> str:
    """``lr=0.001,r=4`` for ``{"lr": 0.001, "r": 4}``; ``default`` for no point. Characters a
    folder name cannot safely hold become ``-``, and a hash of the exact text keeps the label
    unique."""
    if not point:
        return DEFAULT_SETTING
    text = ",".join(f"{name}={format_value(point[name])}" for name in sorted(point))
    if LABEL.fullmatch(text):
        return text
    safe = re.sub(f"[^{LABEL_CHARS}]+", "-", text)
    return f"{safe}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def check_label(label: str) -> str:
    """``label`` if it can name a setting; else a ValueError naming the allowed characters."""
    if not LABEL.fullmatch(label):
        raise ValueError(f"setting {label!r}: use only letters, digits and . _ = , + -")
    return label
