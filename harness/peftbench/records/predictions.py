"""Per-example validation predictions, kept beside each result record so that paired tests and
later re-analysis need no rerun.

``<run folder>/predictions.json`` holds ``run_id``, ``split`` (``"validation"``) and three lists
of ints of one length: ``example_ids`` (row positions in the evaluated validation split: with
``max_eval_examples`` the seeded sample every run draws, so positions align across runs),
``predictions`` (the predicted class) and ``references`` (the true class).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from peftbench.records.files import write_json_atomic

PREDICTIONS_FILE = "predictions.json"
FIELDS = ("example_ids", "predictions", "references")


class PredictionsError(ValueError):
    """A predictions file that is not JSON, lacks a field, or whose lists disagree in length."""


@dataclass(frozen=True)
class Predictions:
    """One run's validation predictions, as integer arrays."""

    run_id: str
    split: str
    example_ids: np.ndarray
    predictions: np.ndarray
    references: np.ndarray

    def aligns_with(self, other: Predictions) -> bool:
        """Whether both runs scored the same examples, in the same order, with the same labels."""
        return np.array_equal(self.example_ids, other.example_ids) and np.array_equal(
            self.references, other.references
        )


def write_predictions(
    folder: str | os.PathLike,
    run_id: str,
    predictions: Sequence[int],
    references: Sequence[int],
    example_ids: Sequence[int] | None = None,
) -> Path:
    """Write ``folder/predictions.json`` atomically; ``example_ids`` default to 0, 1, ..."""
    if len(predictions) != len(references):
        raise PredictionsError(
            f"{len(predictions)} predictions for {len(references)} references in {run_id}"
        )
    ids = range(len(references)) if example_ids is None else example_ids
    payload = {
        "run_id": run_id,
        "split": "validation",
        "example_ids": [int(i) for i in ids],
        "predictions": [int(p) for p in predictions],
        "references": [int(r) for r in references],
    }
    path = Path(folder) / PREDICTIONS_FILE
    write_json_atomic(path, payload)
    return path


def read_predictions(path: str | os.PathLike) -> Predictions:
    """Read and check one predictions file."""
    try:
        payload = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise PredictionsError(f"{path}: not valid JSON ({error})") from error
    missing = [key for key in ("run_id", "split", *FIELDS) if key not in payload]
    if missing:
        raise PredictionsError(f"{path}: missing {', '.join(missing)}")
    lists = {key: np.asarray(payload[key], dtype=np.int64) for key in FIELDS}
    if len({values.shape for values in lists.values()}) != 1 or lists["references"].ndim != 1:
        raise PredictionsError(f"{path}: {', '.join(FIELDS)} must be lists of one length")
    return Predictions(str(payload["run_id"]), str(payload["split"]), **lists)


def predictions_beside(record_path: str | os.PathLike, run_id: str) -> Predictions | None:
    """The predictions file next to a record, or None when there is none or it belongs to another
    run (a file that cannot be read raises :class:`PredictionsError`)."""
    path = Path(record_path).parent / PREDICTIONS_FILE
    if not path.is_file():
        return None
    kept = read_predictions(path)
    return kept if kept.run_id == run_id else None
