"""Which accelerator a job uses.

Snakemake sets no ``CUDA_VISIBLE_DEVICES``: with ``--resources gpu=K`` on a multi-GPU host every
job must pick its own device. A job takes the first free slot among the visible devices by
holding an exclusive lock file per device for its lifetime (the OS releases it when the process
exits, even on SIGKILL). When every device is held it waits, up to ``PEFTBENCH_GPU_WAIT_S``
seconds (default 600), then raises :class:`DevicesBusyError`.

Locks are kept per host, and per SLURM job inside an allocation: the scheduler has already given
the job its own GPUs (often renumbered from 0), so jobs on other nodes or in other allocations
never contend for lock files on a shared file system. They live in one absolute folder per user
(:func:`default_lock_dir`), so sweeps started from different folders share them.

A job uses a GPU only when its spec asks for one (``gpus_per_run``): 0 is the CPU even on a GPU
host, and 1 on a host where torch sees no CUDA device is refused
(:class:`DeviceRequestError`), never silently run on the CPU.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import IO

WAIT_ENV = "PEFTBENCH_GPU_WAIT_S"
LOCK_DIR_ENV = "PEFTBENCH_LOCK_DIR"
GPU_CHOICES = (0, 1)
"""GPUs a run may ask for: the runner trains on one device."""
DEFAULT_WAIT_S = 600.0
POLL_S = 0.5

_held: list[IO[str]] = []


class DevicesBusyError(RuntimeError):
    """Every visible device stayed held by other peftbench jobs for the whole wait."""


class DeviceRequestError(RuntimeError):
    """The run asks for devices this host cannot give it (a GPU where torch sees none, or a
    count the runner cannot use): the environment is wrong, not the combination."""


def default_lock_dir() -> Path:
    """``$PEFTBENCH_LOCK_DIR`` if set, else ``<temp dir>/peftbench-<uid>/gpu-locks``.

    One folder per user on a host, whatever folder a sweep runs from: the temporary folder is
    local to the host and outlives a login session (``$XDG_RUNTIME_DIR`` is removed at logout,
    under running jobs). A results folder would differ between sweeps. Users who share GPUs set
    ``PEFTBENCH_LOCK_DIR`` to one folder they can all write.
    """
    configured = os.environ.get(LOCK_DIR_ENV)
    if configured:
        return Path(configured).resolve()
    return Path(tempfile.gettempdir()).resolve() / f"peftbench-{os.getuid()}" / "gpu-locks"


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


def try_lock(folder: Path, device: str) -> IO[str] | None:
    """GPU ``device``'s lock file in ``folder``, locked (without waiting), or ``None`` when
    another process holds it."""
    handle = open(folder / f"gpu{device}.lock", "a+")  # noqa: SIM115 - held for the job's life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def hold(handle: IO[str]) -> None:
    """Keep a lock that :func:`try_lock` took until the process ends; the file names its pid."""
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _held.append(handle)


def _try_claim(devices: list[str], folder: Path) -> str | None:
    """One pass over ``devices``: lock and return the first free one, else ``None``."""
    folder.mkdir(parents=True, exist_ok=True)
    for device in devices:
        handle = try_lock(folder, device)
        if handle is not None:
            hold(handle)
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


def select_device(
    lock_dir: str | os.PathLike | None = None, gpus: int = 0, timeout: float | None = None
) -> str:
    """``"cpu"`` when ``gpus`` is 0 (even on a GPU host), else ``"cuda:<i>"`` for a GPU claimed
    through the lock files in ``lock_dir`` (default :func:`default_lock_dir`; a relative path is
    made absolute).

    Raises :class:`DeviceRequestError` when ``gpus`` is not 0 or 1, or is 1 and torch sees no
    CUDA device; :class:`DevicesBusyError` when every GPU stays held for ``timeout`` seconds
    (default: :func:`wait_seconds`).
    """
    if gpus not in GPU_CHOICES:
        raise DeviceRequestError(
            f"gpus={gpus!r}: a run trains on one device; valid: 0 (the CPU) or 1 (one GPU)"
        )
    if gpus == 0:
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        raise DeviceRequestError(
            f"gpus={gpus} but torch sees no CUDA device (torch {torch.__version__}, built for "
            f"CUDA {torch.version.cuda}, CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}): install a CUDA build of torch, run "
            "on a GPU host, or set gpus_per_run: 0"
        )
    folder = lock_folder(Path(lock_dir).resolve() if lock_dir is not None else default_lock_dir())
    devices = visible_devices(torch.cuda.device_count())
    wait = wait_seconds() if timeout is None else timeout
    claimed = claim_device(devices, folder, wait)
    if claimed is None:
        raise DevicesBusyError(
            f"all GPUs {devices} stayed held by other peftbench jobs for {wait:g} s "
            f"(locks in {folder}; set {WAIT_ENV} to wait longer)"
        )
    if "CUDA_VISIBLE_DEVICES" in os.environ:  # torch numbers the visible devices from 0
        return f"cuda:{devices.index(claimed)}"
    return f"cuda:{claimed}"
