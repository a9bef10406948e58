"""MetaMathQA → GSM8K: peft's ``method_comparison/MetaMathQA`` recipe as a generation task.

Training rows are MetaMathQA's (Yu et al., 2024: 395k maths questions rewritten from GSM8K's and
MATH's training sets, with worked answers ending ``The answer is: <X>``), kept in their order
where ``len(f"{query} {response}") <= 1300`` characters (peft's filter: the same rows for every
tokenizer). The scored ``validation`` split is GSM8K's test split (1,319 problems). Each prompt
is peft's query template with the question filled in; the completion is the worked answer.
Answers are extracted and compared as peft's ``utils.py`` does (:func:`peft_answer`).

Loaded from the hub (``meta-math/MetaMathQA`` and ``openai/gsm8k`` ``main``) by default, or
from a local folder (``data_dir``) holding MetaMathQA's ``MetaMathQA-395K.json`` (the hub
repository's file: a JSON list of objects with string fields ``query``, ``response``, ``type``,
``original_question``) and GSM8K's ``test.jsonl`` (``tasks/gsm8k.py``'s format). Local files
are checked row by row: a bad one stops loading with a :class:`TaskDataError` naming the file,
the line or item and the value.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal, DivisionByZero, InvalidOperation
from pathlib import Path
from typing import Any

from peftbench import register_task
from peftbench.plugin.task import Head, Task, TaskDataError
from peftbench.tasks.glue import read_utf8
from peftbench.tasks.jsonfiles import folder_problems, read_jsonl, string_fields

HUB_TRAIN = "meta-math/MetaMathQA"
HUB_TEST = ("openai/gsm8k", "main")
TRAIN_FILE = "MetaMathQA-395K.json"
TEST_FILE = "test.jsonl"
TRAIN_FIELDS = ("query", "response", "type", "original_question")
TEST_FIELDS = ("question", "answer")
COLUMNS = ("query", "response")
"""Both splits' columns (peft renames GSM8K's question/answer to these)."""
QUERY_TEMPLATE = "Question: {query} Think step by step.\nAnswer:"
"""peft's ``default_training_params.json`` ``query_template``."""
CHAR_LIMIT = 1300
"""peft's ``data.py``: training rows with ``len(f"{query} {response}")`` above it are dropped."""
DELIMITERS = ("The answer is: ", "The answer is ", "The final answer is: ", "The final answer is ",
              "#### ")  # fmt: skip
"""peft's ``parse_answer``: the first of these found anywhere in the text is used."""
NO_PREDICTION = "(no answer found\nin the generation)"
NO_REFERENCE = "(no answer found\nin the reference)"
"""What :meth:`MetaMathQA.extract` and :meth:`MetaMathQA.reference` return where peft's
parser finds nothing: distinct, and with an inner line break that no extracted answer has (the
parser keeps one line), so they equal no answer and each other: counted wrong, as in peft."""


def parse_answer(text: str) -> str | None:
    """peft's ``parse_answer``: after the last occurrence of the first delimiter
    (:data:`DELIMITERS`) the text holds, its first line, stripped of `` .!?$%``; ``None`` when
    the text holds none."""
    text = text.strip().rstrip(".!?")
    delimiter = next((d for d in DELIMITERS if d in text), None)
    if delimiter is None:
        return None
    answer = text.rpartition(delimiter)[-1].strip()
    return answer.split("\n", 1)[0].strip(" .!?$%")


def to_decimal(text: str) -> Decimal | None:
    """peft's ``convert_to_decimal``: a number, or ``a/b`` with b ≠ 0; ``None`` otherwise."""
    try:
        if "/" in text:
            parts = text.split("/")
            if len(parts) != 2:
                return None
            numerator, denominator = Decimal(parts[0].strip()), Decimal(parts[1].strip())
            return None if denominator == 0 else numerator / denominator
        return Decimal(text.strip())
    except (DivisionByZero, InvalidOperation, ValueError):
        return None


def peft_answer(text: str) -> str | None:
    """The answer in ``text`` as peft compares it, as a string two answers share exactly when
    peft counts them equal: a number becomes its ``float``'s ``repr`` (peft compares floats:
    ``20/35`` equals ``0.5714285714285714``; ``-0.0`` is written ``0.0``), anything else stays
    the parsed text (peft compares it as a string, which never equals a number); ``None`` where
    :func:`parse_answer` finds nothing."""
    parsed = parse_answer(text)
    if parsed is None:
        return None
    number = to_decimal(parsed)
    return parsed if number is None else repr(float(number) + 0.0)


def within_limit(query: str, response: str) -> bool:
    """Whether peft trains on a row: ``query`` + space + ``response`` at most
    :data:`CHAR_LIMIT` characters."""
    return len(f"{query} {response}") <= CHAR_LIMIT


@register_task("metamathqa")
class MetaMathQA(Task):
    description = "MetaMathQA → GSM8K test: peft's method-comparison recipe (generation)"
    head = Head.GENERATION
    metrics = ("exact_match",)
    primary_metric = "exact_match"
    source = (
        "MetaMathQA (Yu et al., 2024), https://huggingface.co/datasets/meta-math/MetaMathQA; "
        "scored on GSM8K test (Cobbe et al., 2021); recipe: huggingface/peft "
        "method_comparison/MetaMathQA"
    )
    max_new_tokens = 300
    """peft's ``generation_kwargs`` ``max_new_tokens``."""
    stop = ()
    """peft generates until the end-of-sequence token or the length limit."""

    def load(self, data_dir: str | None = None):
        from datasets import Dataset, DatasetDict

        if data_dir is None:
            from datasets import load_dataset

            train = load_dataset(HUB_TRAIN, split="train").select_columns(list(COLUMNS))
            test = load_dataset(*HUB_TEST, split="test").rename_columns(
                dict(zip(TEST_FIELDS, COLUMNS, strict=True))
            )
            train = train.filter(
                lambda queries, responses: list(map(within_limit, queries, responses)),
                input_columns=list(COLUMNS),
                batched=True,
            )
            return DatasetDict(train=train, validation=test)
        problems = self.data_dir_problems(data_dir)
        if problems:
            raise TaskDataError("; ".join(problems))
        folder = Path(data_dir)
        return DatasetDict(
            train=Dataset.from_list(self.read_train(folder / TRAIN_FILE)),
            validation=Dataset.from_list(self.read_test(folder / TEST_FILE)),
        )

    def data_dir_problems(self, folder: str) -> list[str]:
        return folder_problems(
            self.name,
            folder,
            (TRAIN_FILE, TEST_FILE),
            "MetaMathQA's JSON list (query, response, type, original_question) and GSM8K's "
            "test split as JSON lines (question, answer)",
        )

    def read_train(self, path: Path) -> list[dict[str, str]]:
        """The rows of a ``MetaMathQA-395K.json`` that peft trains on (:func:`within_limit`),
        in order, ``query`` and ``response`` kept; every response must hold an answer peft's
        parser finds."""
        try:
            items = json.loads(read_utf8(self.name, path))
        except json.JSONDecodeError as error:
            raise TaskDataError(
                f"{self.name}: {path} line {error.lineno}: not JSON ({error.msg}, column "
                f"{error.colno})"
            ) from None
        if not isinstance(items, list) or not items:
            found = "an empty list" if items == [] else f"a JSON {type(items).__name__}"
            raise TaskDataError(
                f"{self.name}: {path} holds {found}; expected a list of objects with "
                f"{', '.join(TRAIN_FIELDS)}"
            )
        rows = []
        for index, item in enumerate(items):
            context = f"{self.name}: {path} item {index}"
            row = string_fields(context, item, TRAIN_FIELDS)
            if parse_answer(row["response"]) is None:
                raise TaskDataError(
                    f"{context}: response ...{row['response'][-60:]!r} has no answer; "
                    f"expected one after {' or '.join(map(repr, DELIMITERS))}"
                )
            if within_limit(row["query"], row["response"]):
                rows.append({column: row[column] for column in COLUMNS})
        if not rows:
            raise TaskDataError(
                f"{self.name}: {path}: no row has query + response within {CHAR_LIMIT} characters"
            )
        return rows

    def read_test(self, path: Path) -> list[dict[str, str]]:
        """GSM8K rows as ``query``/``response``; every answer must end in a finite number
        that peft's parser finds (peft stops on a reference it cannot parse)."""
        rows = []
        for number, row in read_jsonl(self.name, path, TEST_FIELDS):
            answer = peft_answer(row["answer"])
            if answer is None or to_decimal(answer) is None or not math.isfinite(float(answer)):
                raise TaskDataError(
                    f"{self.name}: {path} line {number}: answer ...{row['answer'][-60:]!r} has "
                    f"no final '#### <number>' (parsed: {answer!r}); GSM8K's answer format"
                )
            rows.append({"query": row["question"], "response": row["answer"]})
        return rows

    def prompt(self, row: dict[str, Any]) -> str:
        return QUERY_TEMPLATE.format(query=row["query"])

    def completion(self, row: dict[str, Any]) -> str:
        return row["response"]

    def reference(self, row: dict[str, Any]) -> str:
        answer = peft_answer(row["response"])
        nan = answer is not None and answer == "nan"  # peft: NaN equals nothing
        return NO_REFERENCE if answer is None or nan else answer

    def extract(self, text: str) -> str:
        answer = peft_answer(text)
        return NO_PREDICTION if answer is None else answer
