"""Memory and time measurement (definitions: docs/measurement.md).

CPU memory is the process's resident set: its peak (``VmHWM``) is reset at the start of each
phase through ``/proc/self/clear_refs`` where Linux allows it. CUDA memory is the allocator's
peak allocated and reserved bytes, reset per phase. Clocks are read after device work is
synchronised.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


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


def format_duration(seconds: float) -> str:
    """``42s``, ``9m05s`` or ``2h03m``: a duration for progress lines."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


@contextmanager
def phase(name: str, device: str, into: dict[str, Any]):
    """Measure one phase: wall seconds into ``into["timing"]``, peaks into ``into["memory"]``;
    one log line when it starts and one when it ends."""
    import torch

    cuda = device.startswith("cuda")
    reset = _reset_rss_peak()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    log.info("phase %s started", name)
    start = time.perf_counter()
    outcome = "failed"
    try:
        yield
        outcome = "done"
    finally:
        synchronize(device)
        seconds = time.perf_counter() - start
        into["timing"][f"{name}_s"] = seconds
        log.info("phase %s %s in %s", name, outcome, format_duration(seconds))
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


def expected_memory(model: Any, hp: dict[str, Any]) -> dict[str, int | str]:
    """Analytic memory of training state from the parameter tensors (activations excluded):
    weights and buffers as stored (quantized ones with their quantization state), one gradient
    per trainable element, and AdamW's two moment tensors per trainable element, each in its
    parameter's dtype."""
    from peftbench.params import nbytes  # quantized weights: packed bytes plus their scales

    weights = sum(nbytes(p) for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return {
        "weights_bytes": weights + buffers,
        "gradients_bytes": trainable,
        "optimizer_state_bytes": 2 * trainable,
        "total_bytes": weights + buffers + 3 * trainable,
        "excludes": "activations, allocator caches, framework overhead",
    }


PEAK_FLOPS: dict[str, dict[str, float]] = {
    # Dense peak per second from the vendors' data sheets (no sparsity).
    "H100 80GB HBM3": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
    "H100 PCIe": {"bf16": 756e12, "fp16": 756e12, "fp32": 51e12},
    "H200": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
    "A100-SXM4-80GB": {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12},
    "A100-SXM4-40GB": {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12},
    "L4": {"bf16": 121e12, "fp16": 121e12, "fp32": 30e12},
}


def peak_flops(device_name: str, precision: str) -> float | None:
    """The device's dense peak FLOP/s for the precision's matmuls, if the device is known."""
    compute = "fp32" if precision not in ("bf16", "fp16") else precision
    for key, peaks in PEAK_FLOPS.items():
        if key in device_name:
            return peaks[compute]
    return None


def matmul_params(model: Any) -> int:
    """Parameters that take part in matrix products (embedding tables are lookups)."""
    import torch

    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    return sum(p.numel() for p in model.parameters() if id(p) not in embeddings)


def training_flops_per_token(matmul_params: int, trainable_params: int) -> int:
    """Model FLOPs per trained token: 2N forward, 2N for the input gradients, and 2 per trainable
    element for the weight gradients (attention-score FLOPs ignored)."""
    return 4 * matmul_params + 2 * trainable_params


def model_flops_utilisation(
    tokens_per_s: float, matmul_params: int, trainable_params: int, device_name: str, precision: str
) -> dict[str, float | None]:
    flops = training_flops_per_token(matmul_params, trainable_params) * tokens_per_s
    peak = peak_flops(device_name, precision)
    return {
        "train_model_flops_per_s": flops,
        "device_peak_flops_per_s": peak,
        "train_mfu": None if peak is None else flops / peak,
    }
