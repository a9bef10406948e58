"""GPU claiming on one host, on the CPU: K fake device ids, concurrent processes, lock files."""

from __future__ import annotations

import multiprocessing
import os
import time
from itertools import pairwise
from pathlib import Path

import pytest

from peftbench.run import device
from peftbench.run.device import (
    DeviceRequestError,
    DevicesBusyError,
    claim_device,
    default_lock_dir,
    lock_folder,
    select_device,
)

DEVICES = ["0", "1", "2"]
FORK = multiprocessing.get_context("fork")


def hold_a_device(lock_dir: Path, start, events, hold_s: float) -> None:
    """Child process: claim a device (waiting), report when it was held, then exit."""
    start.wait()
    claimed = claim_device(DEVICES, lock_dir, timeout=60, poll=0.02)
    began = time.monotonic()
    time.sleep(hold_s)
    events.put((claimed, began, time.monotonic()))


def hold_all_then_exit(lock_dir: Path, ready, hold_s: float) -> None:
    for _ in DEVICES:
        claim_device(DEVICES, lock_dir)
    ready.set()
    time.sleep(hold_s)


def test_concurrent_jobs_never_share_a_device(tmp_path):
    jobs = 2 * len(DEVICES)
    start, events = FORK.Barrier(jobs), FORK.Queue()
    workers = [
        FORK.Process(target=hold_a_device, args=(tmp_path, start, events, 0.4)) for _ in range(jobs)
    ]
    for worker in workers:
        worker.start()
    held = [events.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
    assert all(worker.exitcode == 0 for worker in workers)
    # Everyone got a device (the second half waited for the first), never one held twice at once.
    assert {claimed for claimed, _, _ in held} == set(DEVICES)
    for name in DEVICES:
        spans = sorted((began, ended) for claimed, began, ended in held if claimed == name)
        assert len(spans) == 2
        assert all(first[1] <= second[0] for first, second in pairwise(spans))


def test_all_taken_returns_none_at_once(tmp_path):
    assert [claim_device(DEVICES, tmp_path) for _ in DEVICES] == DEVICES
    started = time.monotonic()
    assert claim_device(DEVICES, tmp_path) is None
    assert time.monotonic() - started < 1


def test_a_job_waits_for_a_device_to_be_released(tmp_path):
    ready = FORK.Event()
    holder = FORK.Process(target=hold_all_then_exit, args=(tmp_path, ready, 1.0))
    holder.start()
    assert ready.wait(timeout=30)
    assert claim_device(DEVICES, tmp_path) is None
    started = time.monotonic()
    assert claim_device(DEVICES, tmp_path, timeout=30, poll=0.05) == "0"
    assert 0.3 < time.monotonic() - started < 30  # it waited for the holder to exit
    holder.join(timeout=10)


def test_waiting_gives_up_after_the_timeout(tmp_path):
    for _ in DEVICES:
        claim_device(DEVICES, tmp_path)
    started = time.monotonic()
    assert claim_device(DEVICES, tmp_path, timeout=0.3, poll=0.05) is None
    assert 0.3 <= time.monotonic() - started < 5


@pytest.fixture
def two_fake_gpus(monkeypatch):
    """torch sees two CUDA devices, exposed to this job as physical ids 5 and 7."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)


def test_select_device_numbers_visible_devices_from_zero(tmp_path, two_fake_gpus):
    assert claim_device(["5"], lock_folder(tmp_path)) == "5"
    assert select_device(tmp_path, gpus=1, timeout=0) == "cuda:1"


def test_select_device_fails_naming_the_devices_when_all_stay_busy(tmp_path, two_fake_gpus):
    for name in ("5", "7"):
        claim_device([name], lock_folder(tmp_path))
    with pytest.raises(DevicesBusyError, match=r"\['5', '7'\].*0.2 s"):
        select_device(tmp_path, gpus=1, timeout=0.2)


def test_select_device_waits_as_configured(tmp_path, two_fake_gpus, monkeypatch):
    monkeypatch.setenv(device.WAIT_ENV, "0.2")
    for name in ("5", "7"):
        claim_device([name], lock_folder(tmp_path))
    started = time.monotonic()
    with pytest.raises(DevicesBusyError):
        select_device(tmp_path, gpus=1)
    assert 0.2 <= time.monotonic() - started < 5


def test_no_gpu_asked_is_the_cpu_even_on_a_gpu_host(tmp_path, two_fake_gpus):
    assert select_device(tmp_path, gpus=0) == "cpu"
    assert select_device(tmp_path) == "cpu"  # the sweep's default, gpus_per_run: 0
    assert not any(tmp_path.iterdir())  # no lock taken


def test_a_gpu_asked_without_cuda_is_refused_not_run_on_the_cpu(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device(tmp_path, gpus=0) == "cpu"
    with pytest.raises(DeviceRequestError, match="gpus=1 but torch sees no CUDA device"):
        select_device(tmp_path, gpus=1)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("gpus", [2, -1])
def test_gpu_counts_the_runner_cannot_use_are_refused(tmp_path, two_fake_gpus, gpus):
    with pytest.raises(DeviceRequestError, match=rf"gpus={gpus}: .*valid: 0 .* or 1"):
        select_device(tmp_path, gpus=gpus)


def test_the_default_lock_folder_is_absolute_and_the_same_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(device.LOCK_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    here = default_lock_dir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert default_lock_dir() == here
    assert here.is_absolute() and f"peftbench-{os.getuid()}" in here.parts
    monkeypatch.setenv(device.LOCK_DIR_ENV, "shared-locks")  # made absolute too
    assert default_lock_dir() == tmp_path / "elsewhere" / "shared-locks"


def test_sweeps_from_two_folders_contend_for_the_same_gpus(tmp_path, two_fake_gpus, monkeypatch):
    monkeypatch.setenv(device.LOCK_DIR_ENV, str(tmp_path / "locks"))
    for folder in ("sweep-a", "sweep-b"):
        (tmp_path / folder).mkdir()
    monkeypatch.chdir(tmp_path / "sweep-a")
    assert select_device(gpus=1, timeout=0) == "cuda:0"
    monkeypatch.chdir(tmp_path / "sweep-b")
    assert select_device(gpus=1, timeout=0) == "cuda:1"  # not cuda:0 again
    with pytest.raises(DevicesBusyError, match=str(tmp_path / "locks")):
        select_device(gpus=1, timeout=0)


def test_a_relative_lock_dir_is_made_absolute(tmp_path, two_fake_gpus, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert [select_device("rel", gpus=1, timeout=0) for _ in range(2)] == ["cuda:0", "cuda:1"]
    with pytest.raises(DevicesBusyError, match=f"locks in {lock_folder(tmp_path / 'rel')}"):
        select_device("rel", gpus=1, timeout=0)


def test_locks_are_per_host_and_per_slurm_job(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    host = lock_folder(tmp_path)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    in_job = lock_folder(tmp_path)
    assert host.parent == in_job.parent == tmp_path
    assert in_job.name == f"{host.name}-slurm4242"
    # Two SLURM jobs on one node both see their GPU as "0": they must not block each other.
    assert claim_device(["0"], in_job) == "0"
    monkeypatch.setenv("SLURM_JOB_ID", "4243")
    assert claim_device(["0"], lock_folder(tmp_path)) == "0"
