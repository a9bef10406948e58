"""Which accelerator a job uses.

Snakemake sets no ``CUDA_VISIBLE_DEVICES``: with ``--resources gpu=K`` on a multi-GPU host every
job must pick its own device. A job takes the first free slot among the visible devices by
holding an exclusive lock file per device for its lifetime (released by the OS when it exits).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

_held: list[IO[str]] = []


def visible_devices(count: int) -> list[str]:
    """Device ids a job may use: ``CUDA_VISIBLE_DEVICES`` if set, else ``0..count-1``."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d for d in listed.split(",") if d.strip()]
    return [str(i) for i in range(count)]


def claim_device(devices: list[str], lock_dir: str | os.PathLike) -> str | None:
    """Lock and return the first free device of ``devices`` (``None`` when all are taken).

    The lock is held until the process exits, so concurrent jobs never share a device.
    """
    folder = Path(lock_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for device in devices:
        handle = open(folder / f"gpu{device}.lock", "w")  # noqa: SIM115 - held for the job's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        handle.write(str(os.getpid()))
        handle.flush()
        _held.append(handle)
        return device
    return None


def select_device(lock_dir: str | os.PathLike) -> str:
    """``"cuda:<i>"`` for a claimed GPU, or ``"cpu"`` when none is available."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    devices = visible_devices(torch.cuda.device_count())
    claimed = claim_device(devices, lock_dir)
    if claimed is None:
        raise RuntimeError(f"all GPUs {devices} are held by other peftbench jobs")
    return (
        f"cuda:{devices.index(claimed)}"
        if "CUDA_VISIBLE_DEVICES" in os.environ
        else f"cuda:{claimed}"
    )
