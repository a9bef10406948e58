"""Result records: one versioned JSON file per run, validated on write and on read, written
atomically (a crash never leaves a file that looks complete)."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from peftbench.records.files import write_json_atomic

SCHEMA_VERSION = "1.3"
"""The version written; :data:`READABLE_VERSIONS` are read (1.0 lacks grid settings and dev
metrics, which readers then treat as the ``default`` setting with no dev score)."""
READABLE_VERSIONS = ("1.0", "1.1", "1.2", "1.3")
SCHEMA_PATH = Path(__file__).parent / "schemas" / "result.schema.json"
STATUSES = ("ok", "oom", "unsupported", "diverged", "failed")


class RecordError(ValueError):
    """A result file that is missing fields, has another schema version, or is not JSON."""


@cache
def _validator() -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


def validate_record(record: dict[str, Any], source: str = "record") -> None:
    if record.get("schema_version") not in READABLE_VERSIONS:
        raise RecordError(
            f"{source}: schema_version {record.get('schema_version')!r}, "
            f"this peftbench reads {', '.join(map(repr, READABLE_VERSIONS))}"
        )
    errors = sorted(_validator().iter_errors(record), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "(top level)"
        raise RecordError(f"{source}: invalid at {where}: {errors[0].message}")


def write_record(path: str | os.PathLike, record: dict[str, Any]) -> None:
    validate_record(record, str(path))
    write_json_atomic(Path(path), record)


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    try:
        record = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise RecordError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(record, dict):
        raise RecordError(f"{path}: not a JSON object")
    validate_record(record, str(path))
    return record
