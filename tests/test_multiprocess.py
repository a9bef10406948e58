"""Runs of several processes: a real 2-process gloo run on the CPU through the workflow's own
command (``peftbench run --spec``), and the pieces around it (spec checks, the launch command,
claiming several GPUs at once)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import run_cli

from peftbench.planning.spec import SPEC_FILE, SpecError, resolve_spec, write_spec
from peftbench.records.predictions import PREDICTIONS_FILE
from peftbench.records.record import read_record
from peftbench.run import device, distributed
from peftbench.run.device import DeviceRequestError, DevicesBusyError, claim_device, lock_folder

TINY = {"steps": 4, "batch_size": 8, "max_length": 32, "max_eval_examples": 32}


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tokenized") / "docstring-match"
    run_cli(
        "tokenize", "--task", "docstring-match", "--model", "minilm-l2",
        "--max-length", str(TINY["max_length"]), "--out", str(folder),
    )  # fmt: skip
    return folder


@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.slow(seconds=25)
def test_a_two_process_cpu_run_records_every_rank_once(tmp_path, tokenized, method):
    spec = resolve_spec("minilm-l2", method, "docstring-match", 0, TINY, processes=2)
    out = tmp_path / "run"
    spec_path = write_spec(out, spec)
    run_cli(
        "run", "--spec", str(spec_path), "--tokenized", str(tokenized),
        "--threads", "2", "--out", str(out),
    )  # fmt: skip
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted([PREDICTIONS_FILE, "result.json", SPEC_FILE])  # one record
    record = read_record(out / "result.json")  # valid under the schema
    assert record["status"]["code"] == "ok", record["status"]["message"]
    assert record["spec"]["processes"] == 2
    assert record["provenance"]["command"].startswith("peftbench run --spec")
    memory = record["memory"]["per_process"]
    assert [entry["rank"] for entry in memory] == [0, 1]
    assert all(entry["train_cpu_peak_rss_bytes"] > 0 for entry in memory)
    rates = record["throughput"]["per_process"]
    assert [entry["rank"] for entry in rates] == [0, 1]
    whole = sum(entry["train_tokens_per_s"] for entry in rates)
    assert record["throughput"]["train_tokens_per_s"] == pytest.approx(whole)
    assert all(entry["train_tokens_per_s"] < whole for entry in rates)
    ran = record["provenance"]["distributed"]
    assert ran["processes"] == 2 and ran["backend"] == "gloo"
    # DDP averaged the gradients: both ranks ended with the same weights, and they trained.
    first, second = ran["weights_checksums"]
    assert ran["replicas_identical"] and first == second
    assert len(record["training"]["losses"]) == TINY["steps"]
    assert record["metrics"]["num_examples"] == TINY["max_eval_examples"]


def test_the_launch_command_is_accelerates_with_the_threads_shared():
    command = distributed.launch_command(4, "r/spec.json", "r", "peftbench run", "tok", threads=8)
    assert command[:4] == [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    assert command[command.index("--num_processes") + 1] == "4"
    assert command[command.index("--threads") + 1] == "2"
    run = command[command.index("-m", 3) :]
    assert run[:5] == ["-m", "peftbench", "run", "--spec", "r/spec.json"]
    assert run[run.index("--command") + 1] == "peftbench run"


@pytest.mark.parametrize(
    ("gpus", "processes", "message"),
    [
        (2, 3, r"processes=3 with gpus=2: one per GPU; valid: 2"),
        (0, 0, r"processes=0: must be an integer >= 1"),
        (-1, None, r"gpus=-1: must be an integer >= 0"),
        (0, 3, r"batch_size=8 is split among processes=3: valid: a multiple of 3"),
    ],
)
def test_bad_process_counts_are_refused(gpus, processes, message):
    with pytest.raises(SpecError, match=message):
        resolve_spec(
            "minilm-l2", "lora", "docstring-match", 0, TINY, gpus=gpus, processes=processes
        )


def test_gpus_default_to_one_process_each():
    assert resolve_spec("minilm-l2", "lora", "docstring-match", 0, TINY, gpus=2).processes == 2
    assert resolve_spec("minilm-l2", "lora", "docstring-match", 0, TINY).processes == 1


def test_a_launched_rank_whose_world_differs_from_the_spec_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not distributed.needs_launch(2)  # a rank of the launched job runs, never relaunches
    with pytest.raises(DeviceRequestError, match="one of 2 .* processes=4"):
        distributed.needs_launch(4)


@pytest.fixture
def four_fake_gpus(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(device, "_held", [])  # the locks this test takes, released after it


def test_several_gpus_are_claimed_all_at_once_or_not_at_all(tmp_path, four_fake_gpus):
    folder = lock_folder(tmp_path)
    assert claim_device(["1", "2"], folder) == "1"  # another job holds GPU 1
    assert distributed.claim_gpus(2, tmp_path, timeout=0) == ["0", "2"]
    with pytest.raises(DevicesBusyError, match="2 of the GPUs"):
        distributed.claim_gpus(2, tmp_path, timeout=0)  # only GPU 3 is free: none is kept
    assert distributed.claim_gpus(1, tmp_path, timeout=0) == ["3"]
    with pytest.raises(DeviceRequestError, match="gpus=5 but this host shows 4 GPUs"):
        distributed.claim_gpus(5, tmp_path, timeout=0)
