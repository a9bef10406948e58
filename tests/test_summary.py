"""The status line a sweep ends with (harness/peftbench/reporting/summary.py)."""

from __future__ import annotations

import json
from pathlib import Path

from peftbench.reporting.summary import MISSING, status_counts, summary_line


def write_status(path: Path, code: str) -> Path:
    """A file with just the field the summary reads: ``status.code``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"status": {"code": code, "message": ""}}))
    return path


def test_counts_each_status_and_the_runs_without_a_record(tmp_path):
    records = [
        write_status(tmp_path / f"{index}" / "result.json", code)
        for index, code in enumerate(["ok", "unsupported", "ok", "failed"])
    ]
    counts = status_counts([*records, tmp_path / "never-ran" / "result.json"])
    assert counts == {"ok": 2, "unsupported": 1, "failed": 1, MISSING: 1}


def test_line_lists_statuses_in_the_schema_order_and_names_where_to_look():
    counts = {"failed": 1, "unsupported": 2, "ok": 15}
    assert summary_line(counts, "reports/leaderboard.md") == (
        "18 runs: 15 ok, 2 unsupported, 1 failed — see reports/leaderboard.md"
    )
    assert summary_line({MISSING: 1, "oom": 1}, "logs/") == (
        f"2 runs: 1 oom, 1 {MISSING} — see logs/"
    )
    assert summary_line({"ok": 1}, "x.md") == "1 run: 1 ok — see x.md"
