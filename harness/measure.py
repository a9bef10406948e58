"""Memory and time measurement (definitions: docs/measurement.md).

CPU memory is the process's resident set: its peak (``VmHWM``) is reset at the start of each
phase through ``/proc/self/clear_refs`` where Linux allows it. CUDA memory is the allocator's
peak allocated and reserved bytes, reset per phase. Clocks are read after device work is
synchronised.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_rss_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


@contextmanager
def phase(name: str, device: str, into: dict[str, Any]):
    """Measure one phase: wall seconds into ``into["timing"]``, peaks into ``into["memory"]``."""
    import torch

    cuda = device.startswith("cuda")
    reset = _reset_rss_peak()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    try:
        yield
    finally:
        synchronize(device)
        into["timing"][f"{name}_s"] = time.perf_counter() - start
        memory = into["memory"]
        peak = _status_bytes("VmHWM")
        memory[f"{name}_cpu_peak_rss_bytes"] = peak
        memory[f"{name}_cpu_peak_rss_scope"] = "phase" if reset else "process"
        memory[f"{name}_cpu_rss_end_bytes"] = _status_bytes("VmRSS")
        if cuda:
            memory[f"{name}_gpu_peak_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
            memory[f"{name}_gpu_peak_reserved_bytes"] = torch.cuda.max_memory_reserved(device)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]
