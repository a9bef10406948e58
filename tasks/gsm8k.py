"""GSM8K (Cobbe et al., 2021): grade-school maths word problems, answered with a worked solution.

Each row is a ``question`` and an ``answer``: the solution's steps, with ``<<48/2=24>>``
calculator annotations, ending in a line ``#### <number>``. The model is trained on the whole
solution and scored on the number it ends with (exact match).

Loaded from the Hugging Face hub (``openai/gsm8k``, config ``main``) by default, or from a local
folder (``data_dir``) holding that config's files ``train.jsonl`` and ``test.jsonl`` (one JSON
object per line); the test split is the reported ``validation`` split. Local files are checked
line by line: a bad file stops loading with a :class:`TaskDataError` naming the file, the line
and what is wrong.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from peftbench import register_task
from peftbench.plugin.task import Head, Task, TaskDataError
from peftbench.tasks.jsonfiles import folder_problems, read_jsonl

HUB_DATASET = ("openai/gsm8k", "main")
SPLIT_FILES = {"train": "train.jsonl", "validation": "test.jsonl"}
FIELDS = ("question", "answer")
MARK = "####"
NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
"""A number as solutions write it: an optional sign and ``$``, digits with thousands commas, an
optional decimal part (a sentence's full stop after it is not one)."""


def final_number(text: str) -> str:
    """The answer in a solution: the first number after the last ``####`` if there is one, else
    the last number in the text (lm-eval's flexible extraction); commas and ``$`` removed; ``""``
    where the text has no number."""
    _, mark, tail = text.rpartition(MARK)
    found = NUMBER.search(tail) if mark else None
    if found is None:
        numbers = NUMBER.findall(text)
        if not numbers:
            return ""
        value = numbers[-1]
    else:
        value = found.group()
    return value.replace(",", "").replace("$", "")


@register_task("gsm8k")
class GSM8K(Task):
    description = "GSM8K: grade-school maths word problems, worked solutions (generation)"
    head = Head.GENERATION
    metrics = ("exact_match",)
    primary_metric = "exact_match"
    source = "GSM8K (Cobbe et al., 2021), https://huggingface.co/datasets/openai/gsm8k"
    max_new_tokens = 256
    stop = ("\n\n", "Question:")
    """A solution spans several lines; a blank line or a next question ends it."""

    def load(self, data_dir: str | None = None):
        from datasets import Dataset, DatasetDict, load_dataset

        if data_dir is None:
            hub = load_dataset(*HUB_DATASET)
            return DatasetDict(
                train=hub["train"].select_columns(list(FIELDS)),
                validation=hub["test"].select_columns(list(FIELDS)),
            )
        problems = self.data_dir_problems(data_dir)
        if problems:
            raise TaskDataError("; ".join(problems))
        return DatasetDict(
            {
                split: Dataset.from_list(self.read(Path(data_dir) / name))
                for split, name in SPLIT_FILES.items()
            }
        )

    def train_size(self, data_dir: str | None = None) -> int | None:
        """The rows of a local ``train.jsonl`` (read and checked as loading would); ``None``
        for the hub copy."""
        if data_dir is None or self.data_dir_problems(data_dir):
            return None
        return len(self.read(Path(data_dir) / SPLIT_FILES["train"]))

    def data_dir_problems(self, folder: str) -> list[str]:
        return folder_problems(
            self.name, folder, tuple(SPLIT_FILES.values()), "GSM8K JSON lines: question, answer"
        )

    def read(self, path: Path) -> list[dict[str, str]]:
        """One split file's rows; every answer must end in ``#### <number>``."""
        rows = read_jsonl(self.name, path, FIELDS)
        for number, row in rows:
            _, mark, tail = row["answer"].rpartition(MARK)
            if not mark or NUMBER.search(tail) is None:
                raise TaskDataError(
                    f"{self.name}: {path} line {number}: answer ...{row['answer'][-60:]!r} has "
                    f"no final '{MARK} <number>' line (GSM8K's answer format)"
                )
        return [row for _, row in rows]

    def prompt(self, row: dict[str, Any]) -> str:
        return row["question"]

    def completion(self, row: dict[str, Any]) -> str:
        return row["answer"]

    def extract(self, text: str) -> str:
        return final_number(text)
