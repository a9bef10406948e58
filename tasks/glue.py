"""GLUE tasks (Wang et al., 2018): SST-2, RTE and CoLA.

Loaded from the Hugging Face hub (``nyu-mll/glue``) by default, or from a local folder
(``data_dir``) holding ``train.tsv`` and ``validation.tsv`` in the original GLUE layout. Local
files are checked row by row: a bad file stops loading with a :class:`TaskDataError` naming the
task, the file, the line, the bad value and the valid choices.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from peftbench import register_task
from peftbench.plugin.task import Task, TaskDataError

HUB_DATASET = "nyu-mll/glue"
SPLIT_FILES = {"train": "train.tsv", "validation": "validation.tsv"}


def read_utf8(task: str, path: Path) -> str:
    """``path``'s text; a :class:`TaskDataError` giving the line and byte where it is not UTF-8."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        bad = raw[error.start : error.end]
        raise TaskDataError(
            f"{task}: {path} line {line} (byte {error.start}): {bad!r} is not UTF-8; "
            "task files must be UTF-8 text"
        ) from None


class GlueTask(Task):
    subset: str = ""
    source = "GLUE (Wang et al., 2018), https://gluebenchmark.com"
    columns: tuple[str, ...] = ()
    """The files' columns where they have no header row; empty: the first row names them."""
    named_labels: bool = False
    """The files write labels as names (e.g. ``entailment``) rather than class indices."""

    def load(self, data_dir: str | None = None):
        from datasets import Dataset, DatasetDict, load_dataset

        if data_dir is None:
            hub = load_dataset(HUB_DATASET, self.subset)
            return DatasetDict(
                train=hub["train"].select_columns([*self.text_fields, "label"]),
                validation=hub["validation"].select_columns([*self.text_fields, "label"]),
            )
        problems = self.data_dir_problems(data_dir)
        if problems:
            raise TaskDataError("; ".join(problems))
        return DatasetDict(
            {
                split: Dataset.from_list(self.read_tsv(Path(data_dir) / name))
                for split, name in SPLIT_FILES.items()
            }
        )

    def train_size(self, data_dir: str | None = None) -> int | None:
        """The rows of a local ``train.tsv`` (read and checked as loading would); ``None`` for
        the hub copy, which only a download would count."""
        if data_dir is None or self.data_dir_problems(data_dir):
            return None
        return len(self.read_tsv(Path(data_dir) / SPLIT_FILES["train"]))

    def data_dir_problems(self, folder: str) -> list[str]:
        expected = ", ".join(SPLIT_FILES.values())
        path = Path(folder)
        if not path.is_dir():
            what = "is not a folder" if path.exists() else "does not exist"
            return [f"{self.name}: data folder {folder!r} {what}; expected a folder of {expected}"]
        missing = [name for name in SPLIT_FILES.values() if not (path / name).is_file()]
        if missing:
            return [
                f"{self.name}: data folder {folder!r} has no {', '.join(missing)}; "
                f"expected {expected} (GLUE TSV layout)"
            ]
        return []

    def read_tsv(self, path: Path) -> list[dict]:
        """Rows of one GLUE split file, as ``{field: value, "label": int}``."""
        reader = csv.reader(
            io.StringIO(read_utf8(self.name, path), newline=""),
            delimiter="\t",
            quoting=csv.QUOTE_NONE,
        )
        records = [(reader.line_num, values) for values in reader if values]
        required = (*self.text_fields, "label")
        columns = self.columns
        if not columns and records:
            line, header = records.pop(0)
            columns = tuple(header)
            missing = [c for c in required if c not in columns]
            if missing:
                raise TaskDataError(
                    f"{self.name}: {path} line {line}: no column {', '.join(missing)}; found "
                    f"columns: {', '.join(columns)}; expected: {', '.join(required)}"
                )
        if not records:
            raise TaskDataError(f"{self.name}: {path} has no rows (an empty split)")
        where = {c: columns.index(c) for c in required}
        rows = []
        for line, values in records:
            context = f"{self.name}: {path} line {line}"
            if len(values) != len(columns):
                raise TaskDataError(
                    f"{context}: {len(values)} tab-separated fields, expected {len(columns)} "
                    f"({', '.join(columns)})"
                )
            try:
                label = self.label_index(values[where["label"]])
            except ValueError as error:
                raise TaskDataError(f"{context}: {error}") from None
            rows.append({**{f: values[where[f]] for f in self.text_fields}, "label": label})
        return rows

    def label_index(self, value: str) -> int:
        """The class index a file's label cell stands for; a ValueError naming the valid ones."""
        if self.named_labels and value in self.labels:
            return self.labels.index(value)
        last = self.num_labels - 1
        if value.strip().isdecimal() and int(value) <= last:
            return int(value)
        if self.named_labels:
            raise ValueError(
                f"label {value!r} is not one of {', '.join(self.labels)} (or an index 0 to {last})"
            )
        codes = ", ".join(f"{i} {name}" for i, name in enumerate(self.labels))
        if value.strip().lstrip("-").isdecimal():
            raise ValueError(f"label {value.strip()} is out of range; valid: 0 to {last} ({codes})")
        raise ValueError(f"label {value!r} is not a class index; valid: 0 to {last} ({codes})")


@register_task("glue/sst2")
class SST2(GlueTask):
    description = "GLUE SST-2: sentiment of movie-review sentences (2 classes, accuracy)"
    subset = "sst2"
    text_fields = ("sentence",)
    labels = ("negative", "positive")


@register_task("glue/rte")
class RTE(GlueTask):
    description = "GLUE RTE: textual entailment (text pair, 2 classes, accuracy)"
    subset = "rte"
    text_fields = ("sentence1", "sentence2")
    labels = ("entailment", "not_entailment")
    named_labels = True


@register_task("glue/cola")
class CoLA(GlueTask):
    description = "GLUE CoLA: grammatical acceptability (2 classes, Matthews correlation)"
    subset = "cola"
    text_fields = ("sentence",)
    labels = ("unacceptable", "acceptable")
    metrics = ("matthews_correlation", "accuracy")
    primary_metric = "matthews_correlation"
    columns = ("source", "label", "original_mark", "sentence")
    """The original CoLA files have no header row."""
