"""Which accelerator a job uses.

Snakemake sets no ``CUDA_VISIBLE_DEVICES``: with ``--resources gpu=K`` on a multi-GPU host every
job must pick its own device. A job takes the first free slot among the visible devices by
holding an exclusive lock file per device for its lifetime (the OS releases it when the process
exits, even on SIGKILL). When every device is held it waits, up to ``PEFTBENCH_GPU_WAIT_S``
seconds (default 600), then raises :class:`DevicesBusyError`.

Locks are kept per host, and per SLURM job inside an allocation: the scheduler has already given
the job its own GPUs (often renumbered from 0), so jobs on other nodes or in other allocations
never contend for lock files on a shared file system.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from typing import IO

WAIT_ENV = "PEFTBENCH_GPU_WAIT_S"
DEFAULT_WAIT_S = 600.0
POLL_S = 0.5

_held: list[IO[str]] = []


class DevicesBusyError(RuntimeError):
    """Every visible device stayed held by other peftbench jobs for the whole wait."""


def visible_devices(count: int) -> list[str]:
    """Device ids a job may use: ``CUDA_VISIBLE_DEVICES`` if set, else ``0..count-1``."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip()]
    return [str(i) for i in range(count)]


def lock_folder(lock_dir: str | os.PathLike) -> Path:
    """``lock_dir/<host>`` (``<host>-slurm<job id>`` inside a SLURM job)."""
    scope = socket.gethostname()
    if os.environ.get("SLURM_JOB_ID"):
        scope += f"-slurm{os.environ['SLURM_JOB_ID']}"
    return Path(lock_dir) / scope


def _try_claim(devices: list[str], folder: Path) -> str | None:
    """One pass over ``devices``: lock and return the first free one, else ``None``."""
    folder.mkdir(parents=True, exist_ok=True)
    for device in devices:
        handle = open(folder / f"gpu{device}.lock", "a+")  # noqa: SIM115 - held for the job's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        _held.append(handle)
        return device
    return None


def claim_device(
    devices: list[str], lock_dir: str | os.PathLike, timeout: float = 0.0, poll: float = POLL_S
) -> str | None:
    """Lock and return the first free device of ``devices``, waiting up to ``timeout`` seconds
    for one to be released; ``None`` when all stay taken.

    The lock is held until the process exits, so concurrent jobs never share a device.
    """
    deadline = time.monotonic() + timeout
    while True:
        device = _try_claim(devices, Path(lock_dir))
        if device is not None or time.monotonic() >= deadline:
            return device
        time.sleep(poll)


def wait_seconds() -> float:
    """How long a job waits for a free device (``PEFTBENCH_GPU_WAIT_S``)."""
    return float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_S))


def select_device(lock_dir: str | os.PathLike, timeout: float | None = None) -> str:
    """``"cuda:<i>"`` for a claimed GPU, or ``"cpu"`` when none is available.

    Raises :class:`DevicesBusyError` when every GPU stays held for ``timeout`` seconds
    (default: :func:`wait_seconds`).
    """
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    devices = visible_devices(torch.cuda.device_count())
    wait = wait_seconds() if timeout is None else timeout
    claimed = claim_device(devices, lock_folder(lock_dir), wait)
    if claimed is None:
        raise DevicesBusyError(
            f"all GPUs {devices} stayed held by other peftbench jobs for {wait:g} s "
            f"(locks in {lock_folder(lock_dir)}; set {WAIT_ENV} to wait longer)"
        )
    if "CUDA_VISIBLE_DEVICES" in os.environ:  # torch numbers the visible devices from 0
        return f"cuda:{devices.index(claimed)}"
    return f"cuda:{claimed}"
