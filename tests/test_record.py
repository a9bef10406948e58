from __future__ import annotations

import json

import pytest

from peftbench.planning.spec import resolve_spec
from peftbench.records.record import RecordError, read_record, write_record
from peftbench.run.runner import empty_record


def make_record():
    record = empty_record(
        resolve_spec("minilm-l2", "lora", "docstring-match", 0), "peftbench run ..."
    )
    record["provenance"]["code_hash"] = "x"
    record["timing"]["finished_at"] = record["timing"]["started_at"]
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


@pytest.mark.parametrize(
    "section, field, value, fragment",
    [
        ("throughput", "train_tokens_per_sec", 10.0, "train_tokens_per_sec"),  # a misspelt name
        ("throughput", "train_tokens_per_s", -1.0, "minimum"),
        ("memory", "train_cpu_peak_rss_mb", 5, "train_cpu_peak_rss_mb"),  # a unit not in bytes
        ("memory", "train_cpu_peak_rss_scope", "job", "'job' is not one of"),
        ("training", "loss", 0.5, "'loss'"),
        ("params", "trainable", -3, "minimum"),
        ("params", "update_rank", {"max": 4, "mean": 4.0, "matrices": 2}, "'method'"),
        ("timing", "train_seconds", 1.0, "train_seconds"),
    ],
)
def test_every_measurement_field_is_spelled_out(tmp_path, section, field, value, fragment):
    record = make_record()
    record[section][field] = value
    with pytest.raises(RecordError, match=fragment):
        write_record(tmp_path / "result.json", record)
    assert not (tmp_path / "result.json").exists()


def test_an_interrupted_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    import os

    from peftbench.records.files import write_text_atomic

    target = tmp_path / "reports" / "leaderboard.md"
    write_text_atomic(target, "old\n")

    def crash(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in target.parent.iterdir()] == ["leaderboard.md"]  # no temporary left
