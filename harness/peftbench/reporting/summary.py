"""The line a sweep ends with: how many of its runs ended with each status."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from peftbench.records.record import STATUSES

MISSING = "without a record"
"""Runs whose job failed or never ran: no result.json; counted after the statuses."""


def status_counts(records: Iterable[str | os.PathLike]) -> Counter[str]:
    """Each record's status code, counted; a path with no file counts as :data:`MISSING`."""
    counts: Counter[str] = Counter()
    for path in records:
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            counts[MISSING] += 1
            continue
        counts[json.loads(text)["status"]["code"]] += 1
    return counts


def summary_line(counts: Mapping[str, int], see: str | os.PathLike) -> str:
    """One line for the end of a sweep, e.g.
    ``18 runs: 15 ok, 2 unsupported, 1 failed — see reports/leaderboard.md``."""
    order = [*STATUSES, *sorted(set(counts) - set(STATUSES))]
    parts = [f"{counts[status]} {status}" for status in order if counts.get(status)]
    total = sum(counts.values())
    return f"{total} run{'s' if total != 1 else ''}: {', '.join(parts) or 'none'} — see {see}"
