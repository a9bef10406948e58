from __future__ import annotations

import json

import pytest

from peftbench.record import RecordError, read_record, write_record
from peftbench.runner import empty_record
from peftbench.spec import resolve_spec


def make_record():
    record = empty_record(
        resolve_spec("minilm-l2", "lora", "docstring-match", 0), "peftbench run ..."
    )
    record["provenance"]["code_hash"] = "x"
    return record


def test_round_trip(tmp_path):
    record = make_record()
    write_record(tmp_path / "result.json", record)
    assert read_record(tmp_path / "result.json") == record
    assert not [p for p in tmp_path.iterdir() if p.name != "result.json"]  # no temporary left


def test_invalid_record_is_not_written(tmp_path):
    record = make_record()
    record["status"]["code"] = "great"
    with pytest.raises(RecordError, match="status"):
        write_record(tmp_path / "result.json", record)
    assert not (tmp_path / "result.json").exists()


def test_old_schema_and_corrupt_files_name_the_file(tmp_path):
    old = {**make_record(), "schema_version": "0.1"}
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(RecordError, match=r"old.json.*schema_version '0.1'"):
        read_record(tmp_path / "old.json")
    (tmp_path / "bad.json").write_text('{"schema_version": "1.0", ')
    with pytest.raises(RecordError, match="bad.json: not valid JSON"):
        read_record(tmp_path / "bad.json")
