"""Runs of several processes: one per GPU (``gpus > 1``), or several on the CPU (gloo).

``peftbench run`` for a spec with ``processes > 1`` is a launcher: it writes the run's spec,
claims the run's GPUs (all of them or none, through the lock files of :mod:`peftbench.run.device`),
makes them the only visible ones, and starts ``accelerate launch --multi_gpu --num_processes N
-m peftbench run --spec ...`` (accelerate's launcher, torchrun underneath; on the CPU
accelerate makes that a gloo group). It holds the locks until the processes end and returns
their exit code. Each launched process runs the same spec: every rank trains (DDP through
``accelerator.prepare``; each step's batch of ``batch_size`` examples is split across the
ranks), then the ranks' measurements are gathered, and the main process alone evaluates,
counts and writes the record (docs/cluster.md, "Runs of several processes").
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from peftbench.run.device import (
    POLL_S,
    DeviceRequestError,
    DevicesBusyError,
    default_lock_dir,
    hold,
    lock_folder,
    try_lock,
    visible_devices,
    wait_seconds,
)

MEMORY_PHASES = ("load", "train")
"""Phases every rank measures; evaluation and counting run in the main process only."""


def world_size() -> int:
    """Processes in this job: ``WORLD_SIZE`` as the launcher sets it, else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_launched() -> bool:
    """Whether this process is one rank of a launched multi-process job."""
    return world_size() > 1


def is_main_process() -> bool:
    """Rank 0, or a process that was not launched as one of several."""
    return int(os.environ.get("RANK", "0")) == 0


def needs_launch(processes: int) -> bool:
    """Whether a run of ``processes`` processes must be launched from this process."""
    if is_launched() and world_size() != processes:
        raise DeviceRequestError(
            f"this process is one of {world_size()} (WORLD_SIZE) but the spec asks for "
            f"processes={processes}: run 'peftbench run' itself, not under a launcher"
        )
    return processes > 1 and not is_launched()


def process_device(lock_dir: str | os.PathLike | None, gpus: int) -> str:
    """The device of this process: in a launched job ``cpu`` or ``cuda:<local rank>`` (the
    launcher made the claimed GPUs the only visible ones), else
    :func:`peftbench.run.device.select_device`."""
    from peftbench.run.device import select_device

    if not is_launched():
        return select_device(lock_dir, gpus)
    return f"cuda:{os.environ['LOCAL_RANK']}" if gpus else "cpu"


def claim_gpus(
    count: int, lock_dir: str | os.PathLike | None = None, timeout: float | None = None
) -> list[str]:
    """Lock ``count`` free GPUs at once and return their ids (all or none are held, so two jobs
    never each hold part of what the other needs), waiting up to ``timeout`` seconds (default
    :func:`peftbench.run.device.wait_seconds`). The locks are held until the process exits."""
    import torch

    if not torch.cuda.is_available():
        raise DeviceRequestError(
            f"gpus={count} but torch sees no CUDA device (torch {torch.__version__}): run on a "
            "GPU host, or set gpus_per_run: 0"
        )
    devices = visible_devices(torch.cuda.device_count())
    if count > len(devices):
        raise DeviceRequestError(
            f"gpus={count} but this host shows {len(devices)} GPUs ({devices}); valid: at most "
            f"{len(devices)}"
        )
    folder = lock_folder(Path(lock_dir).resolve() if lock_dir is not None else default_lock_dir())
    folder.mkdir(parents=True, exist_ok=True)
    wait = wait_seconds() if timeout is None else timeout
    deadline = time.monotonic() + wait
    while True:
        claimed = _claim_all(devices, folder, count)
        if claimed:
            return claimed
        if time.monotonic() >= deadline:
            raise DevicesBusyError(
                f"{count} of the GPUs {devices} did not come free together in {wait:g} s "
                f"(locks in {folder})"
            )
        time.sleep(POLL_S)


def _claim_all(devices: list[str], folder: Path, count: int) -> list[str]:
    """One pass: lock ``count`` free devices and return them, or release those taken and
    return ``[]``. Same lock files as :func:`peftbench.run.device.claim_device`."""
    taken: list[tuple[str, IO[str]]] = []
    for device in devices:
        handle = try_lock(folder, device)
        if handle is None:
            continue
        taken.append((device, handle))
        if len(taken) == count:
            for _, held in taken:
                hold(held)
            return [d for d, _ in taken]
    for _, handle in taken:
        handle.close()
    return []


def launch_command(
    processes: int,
    spec_path: str | os.PathLike,
    out: str | os.PathLike,
    command: str,
    tokenized: str | None = None,
    threads: int | None = None,
    library_warnings: bool = False,
    save_artifact: bool = False,
) -> list[str]:
    """The ``accelerate launch`` command that runs ``spec_path`` as ``processes`` processes
    (``threads`` are shared among them; ``command`` is recorded as the run's command)."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    launch += ["--num_processes", str(processes), "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no"]  # the runner sets precision
    launch += ["--main_process_port", "0"]  # a free port: concurrent jobs never collide
    run = ["-m", "peftbench", "run", "--spec", str(spec_path), "--out", str(out)]
    run += ["--command", command]
    if tokenized:
        run += ["--tokenized", tokenized]
    if threads:
        run += ["--threads", str(max(1, threads // processes))]
    if library_warnings:
        run.append("--library-warnings")
    if save_artifact:
        run.append("--save-artifact")
    return launch + run


def launch(spec: Any, out: str | os.PathLike, command: str, **options: Any) -> int:
    """Write ``spec`` into ``out``, claim its GPUs, run :func:`launch_command` and return its
    exit code (SIGTERM is passed on to the launcher, which ends its processes)."""
    from peftbench.planning.spec import write_spec

    Path(out).mkdir(parents=True, exist_ok=True)
    spec_path = write_spec(out, spec)
    env = dict(os.environ)
    if spec.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(claim_gpus(spec.gpus))
    child = subprocess.Popen(
        launch_command(spec.processes, spec_path, out, command, **options), env=env
    )
    previous = signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    try:
        return child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


def gather_training(accelerator: Any, model: Any, record: dict[str, Any]) -> None:
    """Put every rank's training figures into ``record`` (a collective: every rank calls it):
    per-process load and train memory and rates, the whole job's rates (the sum over ranks),
    the training loss of each step averaged over ranks (the loss of the whole batch), and
    whether the ranks' trained weights are identical."""
    import torch
    from accelerate.utils import gather_object

    trainable = [p.detach() for p in model.parameters() if p.requires_grad]
    checksum = float(torch.stack([p.double().sum() for p in trainable]).sum()) if trainable else 0.0
    mine = {
        "rank": accelerator.process_index,
        "memory": {
            key: value
            for key, value in record["memory"].items()
            if key.split("_", 1)[0] in MEMORY_PHASES
        },
        "train_samples_per_s": record["throughput"]["train_samples_per_s"],
        "train_tokens_per_s": record["throughput"]["train_tokens_per_s"],
        "losses": record["training"]["losses"],
        "weights_checksum": checksum,
    }
    ranks = sorted(gather_object([mine]), key=lambda r: r["rank"])
    record["memory"]["per_process"] = [{"rank": r["rank"], **r["memory"]} for r in ranks]
    rates = ("train_samples_per_s", "train_tokens_per_s")
    record["throughput"]["per_process"] = [
        {"rank": r["rank"], **{key: r[key] for key in rates}} for r in ranks
    ]
    for key in rates:
        record["throughput"][key] = sum(r[key] for r in ranks)
    losses = [sum(step) / len(ranks) for step in zip(*(r["losses"] for r in ranks), strict=True)]
    record["training"].update(losses=losses, loss_first=losses[0], loss_last=losses[-1])
    checksums = [r["weights_checksum"] for r in ranks]
    record["provenance"]["distributed"] = {
        "processes": accelerator.num_processes,
        "backend": torch.distributed.get_backend(),
        "launcher": "accelerate launch",
        "weights_checksums": checksums,
        "replicas_identical": len(set(checksums)) == 1,
    }
