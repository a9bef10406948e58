"""GLUE tasks (Wang et al., 2018): SST-2, RTE and CoLA.

Loaded from the Hugging Face hub (``nyu-mll/glue``) by default, or from a local folder
(``data_dir``) holding ``train.tsv`` and ``validation.tsv`` in the original GLUE layout.
"""

from __future__ import annotations

import csv
from pathlib import Path

from peftbench import register_task
from peftbench.task import Task

HUB_DATASET = "nyu-mll/glue"


class GlueTask(Task):
    subset: str = ""
    source = "GLUE (Wang et al., 2018), https://gluebenchmark.com"

    def load(self, data_dir: str | None = None):
        from datasets import Dataset, DatasetDict, load_dataset

        if data_dir is None:
            hub = load_dataset(HUB_DATASET, self.subset)
            return DatasetDict(
                train=hub["train"].select_columns([*self.text_fields, "label"]),
                validation=hub["validation"].select_columns([*self.text_fields, "label"]),
            )
        folder = Path(data_dir)
        splits = {}
        for split in ("train", "validation"):
            path = folder / f"{split}.tsv"
            if not path.is_file():
                raise FileNotFoundError(f"{self.name}: no {path} (data_dir={data_dir!r})")
            splits[split] = Dataset.from_list(self.read_tsv(path))
        return DatasetDict(splits)

    def read_tsv(self, path: Path) -> list[dict]:
        """Rows of one GLUE split file, as ``{field: value, "label": int}``."""
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            return [self.parse_row(row) for row in reader]

    def parse_row(self, row: dict[str, str]) -> dict:
        return {**{f: row[f] for f in self.text_fields}, "label": int(row["label"])}


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

    def parse_row(self, row: dict[str, str]) -> dict:
        label = row["label"]
        index = self.labels.index(label) if label in self.labels else int(label)
        return {"sentence1": row["sentence1"], "sentence2": row["sentence2"], "label": index}


@register_task("glue/cola")
class CoLA(GlueTask):
    description = "GLUE CoLA: grammatical acceptability (2 classes, Matthews correlation)"
    subset = "cola"
    text_fields = ("sentence",)
    labels = ("unacceptable", "acceptable")
    metrics = ("matthews_correlation", "accuracy")
    primary_metric = "matthews_correlation"

    def read_tsv(self, path: Path) -> list[dict]:
        # The original CoLA files have no header: source, label, original mark, sentence.
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            return [{"sentence": row[3], "label": int(row[1])} for row in reader]
