"""Checkpoints and resume (peftbench.run.checkpoint): a run killed mid-training and rerun
finishes with the record an uninterrupted run writes, bit for bit on the CPU."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from peftbench.planning.spec import resolve_spec
from peftbench.plugin.errors import SpecError
from peftbench.plugin.registry import METHODS
from peftbench.run import checkpoint
from peftbench.run.checkpoint import CHECKPOINT_FILE, EXIT_CHECKPOINTED, Signals
from peftbench.run.training import Batches

RUN = [
    "--model", "minilm-l2", "--method", "lora", "--task", "docstring-match", "--seed", "0",
    "--set", "steps=100", "--set", "max_length=32", "--set", "batch_size=8",
    "--set", "max_eval_examples=32", "--set", "checkpoint_every_steps=10", "--threads", "1",
]  # fmt: skip
COMPARED = ("training", "metrics", "params", "status")
"""What an interrupted run must reproduce exactly: losses, metrics, counts."""


def start(out: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "peftbench", "run", *RUN, "--out", str(out)]
    with (out.parent / f"{out.name}.log").open("a") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def checkpointed_step(out: Path) -> int | None:
    try:
        return torch.load(out / CHECKPOINT_FILE, weights_only=True)["step"]
    except (FileNotFoundError, EOFError, RuntimeError):
        return None  # not there yet


def signal_at(process: subprocess.Popen, out: Path, step: int, signum: int) -> int:
    """Send ``signum`` once a checkpoint of ``step`` or later exists; the exit status."""
    while (seen := checkpointed_step(out)) is None or seen < step:
        assert process.poll() is None, f"the run ended before step {step}"
        time.sleep(0.05)
    process.send_signal(signum)
    return process.wait(timeout=300)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("resume") / "whole"
    assert start(out).wait(timeout=600) == 0
    assert not (out / CHECKPOINT_FILE).exists()  # spent once the record is written
    return json.loads((out / "result.json").read_text())


@pytest.mark.slow(seconds=75)
def test_a_run_stopped_and_killed_resumes_to_the_uninterrupted_record(tmp_path, uninterrupted):
    """SIGTERM past step 30: a checkpoint, exit 75, no record; the rerun SIGKILLed past step
    60; the next rerun finishes with the uninterrupted run's losses, metrics and counts."""
    out = tmp_path / "run"
    assert signal_at(start(out), out, 30, signal.SIGTERM) == EXIT_CHECKPOINTED
    log = (tmp_path / "run.log").read_text()
    stopped = int(log.split("checkpointed at step ")[1].split()[0])
    assert checkpointed_step(out) == stopped >= 30 and not (out / "result.json").exists()
    assert (
        f"rerun the same spec with the same --out to resume (exit status {EXIT_CHECKPOINTED})"
        in log
    )
    assert signal_at(start(out), out, 60, signal.SIGKILL) == -signal.SIGKILL
    killed_after = checkpointed_step(out)
    assert killed_after >= 60 and not (out / "result.json").exists()
    assert start(out).wait(timeout=600) == 0
    record = json.loads((out / "result.json").read_text())
    for key in COMPARED:
        assert record[key] == uninterrupted[key], key
    assert len(record["training"]["losses"]) == 100 and not (out / CHECKPOINT_FILE).exists()
    resume = record["resume"]
    assert resume["resumed"] and resume["from_step"] == killed_after and resume["segments"] == 3
    assert resume["lost_s"] is None and resume["restart_s"] > 0  # the killed one's loss: unknown
    assert resume["checkpoints"] == 9 + (stopped % 10 != 0)  # every 10 steps, and on SIGTERM
    warm = {s + i for s in (0, stopped, killed_after) for i in range(3)}
    assert record["throughput"]["train_steps_timed"] == 100 - len(warm)  # each step once
    assert uninterrupted["resume"] | {"checkpoint_s": 0} == {
        "resumed": False, "from_step": None, "segments": 1, "restart_s": 0.0, "lost_s": 0.0,
        "checkpoints": 9, "checkpoint_s": 0, "checkpoints_off": None,
    }  # fmt: skip
    assert 0 < uninterrupted["resume"]["checkpoint_s"] < uninterrupted["timing"]["train_s"]


def test_the_data_position_puts_a_new_loader_where_the_old_one_was():
    from torch.utils.data import DataLoader

    def loader():
        generator = torch.Generator().manual_seed(3)
        return DataLoader(list(range(10)), batch_size=3, shuffle=True, generator=generator,
                          drop_last=True)  # fmt: skip

    batches = Batches(loader())
    taken = [batches.next().tolist() for _ in range(7)]  # into the third pass
    position = batches.position()
    assert position["epoch"] == 2 and position["batch"] == 1
    rest = [batches.next().tolist() for _ in range(5)]
    again = Batches(loader(), position)
    assert [again.next().tolist() for _ in range(5)] == rest
    assert taken[:3] != taken[3:6]  # each pass its own shuffle


def test_every_generator_is_restored(tmp_path):
    torch.save(checkpoint.rng_states(), tmp_path / "rng.pt")
    drawn = (random.random(), np.random.rand(), torch.rand(2).tolist())
    checkpoint.restore_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(2).tolist()) == drawn


def stub_run(tmp_path, method="lora", steps=100, **provenance):
    spec = resolve_spec("minilm-l2", method, "docstring-match", 0, {"steps": steps})
    record = {"provenance": {"code_hash": "c", "data_fingerprint": "d", "model_fingerprint": "m"}}
    record["provenance"].update(provenance)
    return SimpleNamespace(
        spec=spec, record=record, out_dir=tmp_path, method=METHODS.get(method),
        accelerator=SimpleNamespace(num_processes=1),
    )  # fmt: skip


def test_a_checkpoint_of_another_run_is_not_resumed_from(tmp_path):
    run = stub_run(tmp_path)
    torch.save({**checkpoint.identity(run), "step": 5}, tmp_path / CHECKPOINT_FILE)
    assert checkpoint.read(run)["step"] == 5
    changed = stub_run(tmp_path, steps=200)
    assert checkpoint.read(changed) is None and not (tmp_path / CHECKPOINT_FILE).exists()
    torch.save({**checkpoint.identity(run), "step": 5}, tmp_path / CHECKPOINT_FILE)
    assert checkpoint.read(stub_run(tmp_path, code_hash="other")) is None  # other code
    torch.save({**checkpoint.identity(run), "step": 5}, tmp_path / CHECKPOINT_FILE)
    every = stub_run(tmp_path)  # when checkpoints are written is not what the run computes
    every.spec.hparams["checkpoint_every_steps"] = 7
    assert checkpoint.read(every)["step"] == 5


def test_runs_that_cannot_checkpoint_say_why(tmp_path):
    assert checkpoint.unavailable_reason(stub_run(tmp_path)) is None
    reason = checkpoint.unavailable_reason(stub_run(tmp_path, method="adalora"))
    assert "adalora changes state outside its parameters" in reason
    several = stub_run(tmp_path)
    several.accelerator.num_processes = 2
    assert checkpoint.unavailable_reason(several) == "runs of several processes do not checkpoint"


def test_signals_only_set_flags_while_training():
    before = signal.getsignal(signal.SIGUSR1)
    with Signals() as signals:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert signals.take() == {signal.SIGUSR1} and signals.take() == set()
    assert signal.getsignal(signal.SIGUSR1) is before


def test_checkpoint_intervals_are_checked():
    for key in ("checkpoint_every_steps", "checkpoint_every_minutes"):
        with pytest.raises(SpecError, match=rf"{key}=-1(\.0)?: must be >= 0 \(0: no checkpoints"):
            resolve_spec("minilm-l2", "lora", "docstring-match", 0, {key: -1})
