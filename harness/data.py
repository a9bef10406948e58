"""Tokenized task data: built once per task × tokenizer × max_length, saved to disk, and loaded
by every run that needs it (``datasets``' own ``.map`` cache cannot key on tokenizer objects)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from peftbench.registry import MODELS, TASKS
from peftbench.task import content_fingerprint

META_FILE = "peftbench_tokenized.json"


def tokenize_task(task_name: str, model_name: str, max_length: int, data_dir: str | None = None):
    """The task's splits tokenized for the model (``input_ids``, ``attention_mask``,
    ``token_type_ids`` where the tokenizer makes them, ``labels``) and the raw data's
    fingerprint."""
    task = TASKS.get(task_name)
    tokenizer = MODELS.get(model_name).tokenizer()
    raw = task.load(data_dir)
    fingerprint = content_fingerprint(raw)

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        texts = [batch[field] for field in task.text_fields]
        encoded = tokenizer(*texts, truncation=True, max_length=max_length)
        encoded["labels"] = batch["label"]
        return encoded

    columns = raw["train"].column_names
    tokenized = raw.map(encode, batched=True, remove_columns=columns, load_from_cache_file=False)
    return tokenized, fingerprint


def save_tokenized(
    out_dir: str | os.PathLike,
    task_name: str,
    model_name: str,
    max_length: int,
    data_dir: str | None = None,
) -> None:
    """Tokenize and save atomically: into a temporary folder, renamed into place when complete."""
    out = Path(out_dir)
    tokenized, fingerprint = tokenize_task(task_name, model_name, max_length, data_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        tokenized.save_to_disk(str(tmp / "data"))
        meta = {
            "task": task_name,
            "tokenizer": MODELS.get(model_name).tokenizer_key,
            "max_length": max_length,
            "data_fingerprint": fingerprint,
            "data_dir": data_dir,
        }
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
