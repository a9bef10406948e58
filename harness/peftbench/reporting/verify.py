"""``peftbench verify RESULTS_DIR``: is a results folder complete and consistent?

Checks that every record under ``runs/`` is valid under the result schema, sits where its run id
says and carries the command that made it; that runs of the same task saw the same data and runs
of the same model the same weights (their fingerprints agree); and that every record the
leaderboard table (``leaderboard.csv``) was built from is present and unchanged in status.
Every problem names its file.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from peftbench.planning.spec import SPEC_FILE, SpecError, read_spec
from peftbench.records.record import RecordError, read_record

LEADERBOARD = "leaderboard.csv"


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def verify(results_dir: str | os.PathLike) -> tuple[int, list[Problem]]:
    """``(valid records, problems)`` of the results folder ``results_dir``."""
    root = Path(results_dir)
    records, problems = read_records(root)
    problems += check_fingerprints(records, "task", "data_fingerprint")
    problems += check_fingerprints(records, "model", "model_fingerprint")
    problems += check_leaderboard(root, records)
    return len(records), problems


def read_records(root: Path) -> tuple[dict[Path, dict[str, Any]], list[Problem]]:
    """Every valid record under ``root/runs`` by path, and a problem for each invalid one."""
    paths = sorted((root / "runs").rglob("result.json"))
    if not paths:
        return {}, [Problem(str(root / "runs"), "no result records")]
    records, problems = {}, []
    for path in paths:
        try:
            record = read_record(path)
        except (RecordError, OSError) as error:
            problems.append(Problem(str(path), str(error).removeprefix(f"{path}: ")))
            continue
        records[path] = record
        problems += check_record(root, path, record)
    return records, problems


def check_record(root: Path, path: Path, record: dict[str, Any]) -> list[Problem]:
    problems = []
    expected = root / "runs" / record["run_id"] / "result.json"
    if path != expected:
        problems.append(
            Problem(str(path), f"holds run {record['run_id']!r}, expected at {expected}")
        )
    command = record["provenance"]["command"]
    if not isinstance(command, str) or not command.strip():
        problems.append(Problem(str(path), "provenance.command is empty"))
    contract = path.parent / SPEC_FILE
    if not contract.is_file():
        problems.append(Problem(str(path), f"no {SPEC_FILE} beside it: the run's contract"))
    else:
        try:
            planned = read_spec(contract).to_dict()
        except SpecError as error:
            problems.append(Problem(str(contract), str(error)))
        else:
            differ = sorted(k for k in planned if planned[k] != record["spec"].get(k))
            if differ:
                problems.append(
                    Problem(str(path), f"its spec differs from {contract} in {', '.join(differ)}")
                )
    return problems


def check_fingerprints(records: dict[Path, dict[str, Any]], key: str, field: str) -> list[Problem]:
    """Runs with the same ``spec[key]`` must share ``provenance[field]``; a run that disagrees
    with the most common value is a problem."""
    groups: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for path, record in records.items():
        value = record["provenance"].get(field)
        if value is not None:
            groups[record["spec"][key]][value].append(path)
    problems = []
    for name, by_value in sorted(groups.items()):
        common = max(by_value, key=lambda value: len(by_value[value]))
        problems += [
            Problem(
                str(path),
                f"{field} {value} differs from {common} of the other {key} {name!r} runs "
                f"(e.g. {by_value[common][0]})",
            )
            for value, paths in sorted(by_value.items())
            if value != common
            for path in paths
        ]
    return problems


def check_leaderboard(root: Path, records: dict[Path, dict[str, Any]]) -> list[Problem]:
    """Every row of ``leaderboard.csv`` must have its record (``runs/<run_id>/result.json``,
    where the workflow wrote it), valid and with the same status."""
    table_path = root / LEADERBOARD
    if not table_path.is_file():
        return [Problem(str(table_path), "missing (the sweep was never aggregated)")]
    try:
        table = pd.read_csv(table_path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        return [Problem(str(table_path), f"unreadable: {error}")]
    if "run_id" not in table.columns:
        return [Problem(str(table_path), "has no run_id column")]
    problems = []
    for row in table.to_dict("records"):
        path = root / "runs" / str(row["run_id"]) / "result.json"
        record = records.get(path)
        if record is None:
            why = "is missing" if not path.is_file() else "is not a valid record"
            problems.append(
                Problem(str(table_path), f"row {row['run_id']!r}: its record {path} {why}")
            )
        elif row.get("status.code") != record["status"]["code"]:
            problems.append(
                Problem(
                    str(table_path),
                    f"row {row['run_id']!r} says status {row.get('status.code')!r}, its record "
                    f"{path} says {record['status']['code']!r} (rerun the aggregation)",
                )
            )
    return problems
