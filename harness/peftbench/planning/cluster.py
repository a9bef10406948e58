"""What a SLURM cluster offers, asked once before a sweep submits anything: a sweep whose runs
ask for GPUs on a cluster whose nodes have none would otherwise see sbatch refuse every job
("Invalid generic resource (gres) specification") and report only that (docs/cluster.md)."""

from __future__ import annotations

import logging
import re
import subprocess

log = logging.getLogger(__name__)

SINFO = ("sinfo", "-h", "-o", "%G")
"""Each node group's generic resources, e.g. ``gpu:a100:4(S:0-1)``, ``gpu:2,mps:200`` or
``(null)``."""


def node_gpus(gres: str) -> int:
    """GPUs of one node from its ``sinfo -o %G`` entry (``gpu[:type]:count[(S:...)]``, comma
    separated; other generic resources and ``(null)`` count 0)."""
    total = 0
    for item in re.sub(r"\([^)]*\)", "", gres).split(","):
        name, *rest = item.strip().split(":")
        if name == "gpu":
            count = rest[-1] if rest else "1"
            total += int(count) if count.isdigit() else 1
    return total


def slurm_gpu_problem(gpus_per_run: int) -> str | None:
    """Why runs asking for ``gpus_per_run`` GPUs each cannot be placed on this SLURM cluster
    (no node has a GPU, or none has that many), from one ``sinfo`` call; ``None`` when they can,
    when no GPU is asked for, or when ``sinfo`` cannot answer (then sbatch decides)."""
    if gpus_per_run <= 0:
        return None
    try:
        answer = subprocess.run(SINFO, capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as error:
        log.warning("could not ask SLURM for its GPUs (%s): %s", " ".join(SINFO), error)
        return None
    groups = sorted({line.strip() for line in answer.stdout.splitlines() if line.strip()})
    most = max((node_gpus(gres) for gres in groups), default=0)
    if most >= gpus_per_run:
        return None
    listed = ", ".join(groups) or "no nodes listed"
    if most == 0:
        return (
            f"gpus_per_run={gpus_per_run} but the cluster's nodes have no GPU "
            f"({' '.join(SINFO)}: {listed}); set gpus_per_run: 0 in your config file"
        )
    return (
        f"gpus_per_run={gpus_per_run} but no node of the cluster has more than {most} GPUs "
        f"({' '.join(SINFO)}: {listed}); set gpus_per_run to at most {most} in your config file"
    )
