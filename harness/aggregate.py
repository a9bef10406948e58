"""Result records -> one flat table (one row per run, dotted column names)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from peftbench.record import RecordError, read_record

DROPPED = ("training.losses",)
"""Per-step series stay in the records; the table keeps scalars."""


def flatten(record: dict) -> dict:
    """One record as a flat row: nested keys joined with dots, hyperparameters included."""
    row = pd.json_normalize(record, sep=".").iloc[0].to_dict()
    for key in DROPPED:
        row.pop(key, None)
    row["record_path"] = record.get("_path")
    return row


def collect(paths: Iterable[str | os.PathLike], skip_invalid: bool = False) -> pd.DataFrame:
    """Read and validate every record; a bad file stops with its name (or warns, when skipping)."""
    rows = []
    for path in paths:
        try:
            record = read_record(path)
        except (RecordError, OSError) as error:
            if not skip_invalid:
                raise
            warnings.warn(f"skipped: {error}", stacklevel=2)
            continue
        rows.append(flatten({**record, "_path": str(path)}))
    frame = pd.DataFrame(rows)
    return frame.drop(columns=[c for c in frame.columns if c == "_path"])


def write_table(frame: pd.DataFrame, out: str | os.PathLike) -> None:
    """Write the table as CSV atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, out)
