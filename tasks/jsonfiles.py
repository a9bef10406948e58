"""Reading tasks' JSON and JSON-lines files, with errors naming the file, the line (or item),
the bad value and what was expected."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peftbench.plugin.task import TaskDataError
from peftbench.tasks.glue import read_utf8


def string_fields(context: str, item: Any, fields: tuple[str, ...]) -> dict[str, str]:
    """``item``'s string ``fields`` (others dropped); a :class:`TaskDataError` starting with
    ``context`` where ``item`` is not an object, lacks one or holds a non-string."""
    if not isinstance(item, dict):
        raise TaskDataError(
            f"{context}: a JSON {type(item).__name__}, expected an object with {', '.join(fields)}"
        )
    missing = [f for f in fields if f not in item]
    if missing:
        raise TaskDataError(
            f"{context}: no field {', '.join(missing)}; found: {', '.join(item) or 'none'}; "
            f"expected: {', '.join(fields)}"
        )
    for field in fields:
        if not isinstance(item[field], str):
            raise TaskDataError(f"{context}: field {field!r} is {item[field]!r}, expected a string")
    return {f: item[f] for f in fields}


def read_jsonl(task: str, path: Path, fields: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """``(line number, row)`` for each row of a JSON-lines file, an object with the string
    ``fields`` (others are dropped); a :class:`TaskDataError` naming the file and line of the
    first bad one."""
    rows = []
    for number, line in enumerate(read_utf8(task, path).splitlines(), start=1):
        if not line.strip():
            continue
        context = f"{task}: {path} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise TaskDataError(
                f"{context}: not JSON ({error.msg}, column {error.colno})"
            ) from None
        rows.append((number, string_fields(context, row, fields)))
    if not rows:
        raise TaskDataError(f"{task}: {path} has no rows (an empty split)")
    return rows


def folder_problems(task: str, folder: str, files: tuple[str, ...], layout: str) -> list[str]:
    """What keeps ``folder`` from holding ``files`` (:meth:`Task.data_dir_problems`)."""
    expected = ", ".join(files)
    path = Path(folder)
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        return [f"{task}: data folder {folder!r} {what}; expected a folder of {expected}"]
    missing = [name for name in files if not (path / name).is_file()]
    if missing:
        return [
            f"{task}: data folder {folder!r} has no {', '.join(missing)}; "
            f"expected {expected} ({layout})"
        ]
    return []
