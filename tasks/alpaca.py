"""Alpaca (Taori et al., 2023): 52,002 instructions with the replies text-davinci-003 wrote.

Each row is an ``instruction``, an optional ``input`` (the text the instruction is about) and
the ``output``. The prompt is the instruction, followed by a blank line and the input where
there is one; the completion is the output, scored by ROUGE-L (and token F1).

Loaded from the Hugging Face hub (``tatsu-lab/alpaca``) by default, or from a local folder
(``data_dir``) holding the original release's ``alpaca_data.json`` (a JSON list of objects).
Alpaca has one split: the validation split is carved out by a hash of each row's content, so
it is the same on every machine and identical rows never straddle the two splits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peftbench import register_task
from peftbench.plugin.task import Head, Task, TaskDataError
from peftbench.tasks.glue import read_utf8
from peftbench.tasks.jsonfiles import folder_problems, string_fields
from peftbench.tasks.stdlib_docs import _bucket

HUB_DATASET = "tatsu-lab/alpaca"
DATA_FILE = "alpaca_data.json"
FIELDS = ("instruction", "input", "output")
VALIDATION_SHARE = 0.05
"""About 2,600 of the release's rows (runs score at most their ``max_eval_examples``)."""


def split_by_hash(task: str, rows: list[dict[str, str]], share: float):
    """``train`` and ``validation`` splits: a row is validation where the hash of its content
    (salted with ``task``) falls below ``share``."""
    from datasets import Dataset, DatasetDict

    held = [_bucket(task + json.dumps(row, sort_keys=True)) < share for row in rows]
    splits = {
        "train": [row for row, out in zip(rows, held, strict=True) if not out],
        "validation": [row for row, out in zip(rows, held, strict=True) if out],
    }
    empty = [split for split, chosen in splits.items() if not chosen]
    if empty:
        raise TaskDataError(
            f"{task}: {len(rows)} rows leave the {' and '.join(empty)} split empty "
            f"(validation takes the rows whose hash falls below {share}); give more rows"
        )
    return DatasetDict({split: Dataset.from_list(chosen) for split, chosen in splits.items()})


@register_task("alpaca")
class Alpaca(Task):
    description = "Alpaca: follow an instruction (52k, generation, ROUGE-L)"
    head = Head.GENERATION
    metrics = ("rouge_l", "token_f1")
    primary_metric = "rouge_l"
    source = "Stanford Alpaca (Taori et al., 2023), https://github.com/tatsu-lab/stanford_alpaca"
    max_new_tokens = 256
    stop = ()
    """Replies span paragraphs: only the end-of-sequence token (or the length) ends one."""

    def load(self, data_dir: str | None = None):
        if data_dir is None:
            from datasets import load_dataset

            rows = load_dataset(HUB_DATASET, split="train").select_columns(list(FIELDS)).to_list()
        else:
            problems = self.data_dir_problems(data_dir)
            if problems:
                raise TaskDataError("; ".join(problems))
            rows = self.read(Path(data_dir) / DATA_FILE)
        return split_by_hash("alpaca", rows, VALIDATION_SHARE)

    def data_dir_problems(self, folder: str) -> list[str]:
        return folder_problems(self.name, folder, (DATA_FILE,), "Alpaca's JSON list of objects")

    def read(self, path: Path) -> list[dict[str, str]]:
        """The rows of an ``alpaca_data.json``; a :class:`TaskDataError` naming the first bad
        one (its line in the file, or its position in the list)."""
        try:
            items = json.loads(read_utf8(self.name, path))
        except json.JSONDecodeError as error:
            raise TaskDataError(
                f"{self.name}: {path} line {error.lineno}: not JSON ({error.msg}, column "
                f"{error.colno})"
            ) from None
        if not isinstance(items, list) or not items:
            found = f"a JSON {type(items).__name__}" if items else "an empty list"
            raise TaskDataError(
                f"{self.name}: {path} holds {found}; expected a list of objects with "
                f"{', '.join(FIELDS)}"
            )
        return [
            string_fields(f"{self.name}: {path} item {index}", item, FIELDS)
            for index, item in enumerate(items)
        ]

    def prompt(self, row: dict[str, Any]) -> str:
        if row["input"].strip():
            return f"{row['instruction']}\n\n{row['input']}"
        return row["instruction"]

    def completion(self, row: dict[str, Any]) -> str:
        return row["output"]
