"""Tokenized task data: built once per task × tokenizer × max_length, saved to disk, and loaded
by every run that needs it (``datasets``' own ``.map`` cache cannot key on tokenizer objects)."""

from __future__ import annotations

import json
import os
import shutil
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftbench.planning.splits import DEV_FRACTION, DEV_SEED, dev_examples, train_examples
from peftbench.plugin.registry import MODELS, TASKS
from peftbench.plugin.task import Head, TaskDataError, content_fingerprint
from peftbench.records.files import staging_dir

if TYPE_CHECKING:
    from datasets import DatasetDict

META_FILE = "peftbench_tokenized.json"


def carve_dev(data: DatasetDict) -> DatasetDict:
    """``train`` split into ``train`` and ``dev`` (:func:`dev_examples` rows drawn with
    :data:`DEV_SEED`, stratified by label where rows have one: each class keeps its share; the
    same on every machine), ``validation`` untouched."""
    from datasets import ClassLabel, DatasetDict

    train = data["train"]
    if "label" not in train.column_names:  # a generation task: nothing to stratify by
        parts = train.train_test_split(test_size=dev_examples(len(train)), seed=DEV_SEED)
        return DatasetDict(train=parts["train"], dev=parts["test"], validation=data["validation"])
    labels = train.features["label"]
    classes = ClassLabel(num_classes=max(train["label"]) + 1)
    parts = train.cast_column("label", classes).train_test_split(
        test_size=dev_examples(len(train)), seed=DEV_SEED, stratify_by_column="label"
    )
    return DatasetDict(
        train=parts["train"].cast_column("label", labels),
        dev=parts["test"].cast_column("label", labels),
        validation=data["validation"],
    )


def tokenize_task(task_name: str, model_name: str, max_length: int, data_dir: str | None = None):
    """The task's ``train``, ``dev`` (carved from train) and ``validation`` splits tokenized for
    the model, and the metadata a run checks and uses (task, tokenizer, length, fingerprint,
    head, answer token ids, split sizes).

    ``classification`` tasks: ``input_ids``, ``attention_mask``, ``token_type_ids`` where the
    tokenizer makes them, and the class as ``labels``. ``causal-lm`` tasks: the prompt followed
    by the right answer as ``input_ids``, the answer's tokens as ``labels`` (-100 on the
    prompt), the class as ``class_label`` and the prompt's length as ``prompt_length``.
    ``generation`` tasks: :func:`encode_generation`."""
    task = TASKS.get(task_name)
    loaded = task.load(data_dir)
    size = len(loaded["train"])
    if train_examples(size) < 1:
        raise TaskDataError(
            f"{task_name}: the train split has {size} row(s), none left to train on once the "
            f"dev split ({DEV_FRACTION:.0%} of it, at least one row) is held out"
        )
    tokenizer = MODELS.get(model_name).tokenizer()
    fingerprint = content_fingerprint(loaded)
    raw = carve_dev(loaded)
    columns = raw["train"].column_names
    if task.head == Head.CAUSAL_LM:
        answers = answer_ids(tokenizer, task.answers)
        encode = partial(encode_prompted, task, tokenizer, answers, max_length)
    elif task.head == Head.GENERATION:
        answers = []
        encode = partial(encode_generation, task, tokenizer, max_length)
    else:
        answers = []
        encode = partial(encode_classification, task, tokenizer, max_length)
    tokenized = raw.map(encode, batched=True, remove_columns=columns, load_from_cache_file=False)
    meta = {
        "task": task_name,
        "tokenizer": MODELS.get(model_name).tokenizer_key,
        "max_length": max_length,
        "data_fingerprint": fingerprint,
        "data_dir": data_dir,
        "head": task.head,
        "answer_ids": answers,
        "dev_fraction": DEV_FRACTION,
        "split_sizes": {split: len(rows) for split, rows in tokenized.items()},
    }
    if task.head == Head.GENERATION:
        meta["prompt_template"] = "chat" if getattr(tokenizer, "chat_template", None) else "plain"
        meta["truncated_rows"] = {
            split: int(sum(rows["truncated"])) for split, rows in tokenized.items()
        }
    return tokenized, meta


def encode_classification(task, tokenizer, max_length: int, batch: dict[str, list[Any]]):
    texts = [batch[field] for field in task.text_fields]
    encoded = tokenizer(*texts, truncation=True, max_length=max_length)
    encoded["labels"] = batch["label"]
    return encoded


def answer_ids(tokenizer, answers: tuple[str, ...]) -> list[list[int]]:
    """Each answer's tokens; an answer the tokenizer maps to no token is an error."""
    ids = [tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers]
    empty = [a for a, i in zip(answers, ids, strict=True) if not i]
    if empty:
        raise ValueError(f"answers {empty!r} tokenize to nothing")
    return ids


def encode_prompted(task, tokenizer, answers, max_length: int, batch: dict[str, list[Any]]):
    """Prompt + right answer, the prompt cut from the left to leave room for the longest
    answer (its end, where the question is asked, stays), after the tokenizer's start token."""
    first = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    start = [] if first is None else [first]
    room = max_length - max(map(len, answers)) - len(start)
    if room < 1:
        raise ValueError(f"max_length={max_length} leaves no room for a prompt before the answers")
    rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
    encoded: dict[str, list[Any]] = {
        "input_ids": [], "attention_mask": [], "labels": [], "class_label": [], "prompt_length": []
    }  # fmt: skip
    for row in rows:
        body = tokenizer(task.prompt(row), add_special_tokens=False)["input_ids"]
        prompt = start + body[-room:]
        answer = answers[row["label"]]
        encoded["input_ids"].append(prompt + answer)
        encoded["attention_mask"].append([1] * (len(prompt) + len(answer)))
        encoded["labels"].append([-100] * len(prompt) + answer)
        encoded["class_label"].append(row["label"])
        encoded["prompt_length"].append(len(prompt))
    return encoded


def prompt_tokens(tokenizer, text: str) -> list[int]:
    """The tokens a ``generation`` task's reply follows: ``text`` as the one user message of the
    tokenizer's chat template, with the assistant's turn opened, where the tokenizer has a chat
    template; else the start token, ``text`` and a newline."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
        )
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    first = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    return ([] if first is None else [first]) + tokenizer(text + "\n", add_special_tokens=False)[
        "input_ids"
    ]


def end_token(tokenizer) -> int:
    """The token that ends a reply: the tokenizer's end-of-sequence token (a chat model's
    end-of-turn), else its separator (WordPiece tokenizers)."""
    for token in (tokenizer.eos_token_id, tokenizer.sep_token_id):
        if token is not None:
            return token
    raise ValueError(
        f"{type(tokenizer).__name__} has neither an EOS nor a SEP token to end a reply"
    )


def encode_generation(task, tokenizer, max_length: int, batch: dict[str, list[Any]]):
    """Prompt (:func:`prompt_tokens`) + reference completion + :func:`end_token`, with the loss
    on the completion and the end token only (``labels`` -100 on the prompt; the collator pads
    ``labels`` with -100). A row longer than ``max_length`` loses the end of its completion
    first (at most half the length is kept for it) and then the start of its prompt, and is
    flagged ``truncated``. The reference answer (:meth:`Task.reference`) is kept as
    ``reference``."""
    rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
    end = end_token(tokenizer)
    encoded: dict[str, list[Any]] = {
        "input_ids": [], "attention_mask": [], "labels": [], "prompt_length": [],
        "reference": [], "truncated": [],
    }  # fmt: skip
    for row in rows:
        prompt = prompt_tokens(tokenizer, task.prompt(row))
        reply = tokenizer(task.completion(row), add_special_tokens=False)["input_ids"] + [end]
        truncated = len(prompt) + len(reply) > max_length
        if truncated:
            reply = reply[: max(max_length - len(prompt), max_length // 2)]
            prompt = prompt[max(0, len(prompt) + len(reply) - max_length) :]
        encoded["input_ids"].append(prompt + reply)
        encoded["attention_mask"].append([1] * (len(prompt) + len(reply)))
        encoded["labels"].append([-100] * len(prompt) + reply)
        encoded["prompt_length"].append(len(prompt))
        encoded["reference"].append(task.reference(row))
        encoded["truncated"].append(truncated)
    return encoded


def save_tokenized(
    out_dir: str | os.PathLike,
    task_name: str,
    model_name: str,
    max_length: int,
    data_dir: str | None = None,
) -> None:
    """Tokenize and save atomically: into a temporary folder, renamed into place when complete."""
    out = Path(out_dir)
    tokenized, meta = tokenize_task(task_name, model_name, max_length, data_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir(out.parent, prefix=f".{out.name}.")
    try:
        tokenized.save_to_disk(str(tmp / "data"))
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_tokenized(folder: str | os.PathLike):
    """``(DatasetDict, metadata)`` saved by :func:`save_tokenized`."""
    from datasets import load_from_disk

    folder = Path(folder)
    meta = json.loads((folder / META_FILE).read_text())
    return load_from_disk(str(folder / "data")), meta
