"""Memory and time measurement (definitions: docs/measurement.md).

CPU memory is the process's resident set: its peak (``VmHWM``) is reset at the start of each
phase through ``/proc/self/clear_refs`` where Linux allows it. CUDA memory is the allocator's
peak allocated and reserved bytes, reset per phase. Clocks are read after device work is
synchronised.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from functools import partial
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
        memory.update({f"{name}_{key}": value for key, value in peak_memory(device).items()})
        memory[f"{name}_cpu_peak_rss_scope"] = "phase" if reset else "process"
        memory[f"{name}_cpu_rss_end_bytes"] = _status_bytes("VmRSS")


def peak_memory(device: str) -> dict[str, int | None]:
    """The peaks since they were last reset: ``cpu_peak_rss_bytes`` (``VmHWM``) and, on a CUDA
    device, ``gpu_peak_allocated_bytes`` and ``gpu_peak_reserved_bytes``."""
    peaks: dict[str, int | None] = {"cpu_peak_rss_bytes": _status_bytes("VmHWM")}
    if device.startswith("cuda"):
        import torch

        peaks["gpu_peak_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        peaks["gpu_peak_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
    return peaks


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


class StepTimer:
    """Wall seconds of each timed step without synchronising inside the loop. On a CUDA device,
    events recorded on the current stream around each step, read once by :meth:`seconds` (one
    synchronisation): a step's time is what the device spent from its start to its end,
    including any wait for the host to queue work. On the CPU, ``time.perf_counter``."""

    def __init__(self, device: str) -> None:
        import torch

        self.device = device
        self.cuda = device.startswith("cuda")
        self._event = partial(torch.cuda.Event, enable_timing=True) if self.cuda else None
        self._marks: list[tuple[Any, Any]] = []
        self._started: Any = None

    def start(self) -> None:
        """Mark the start of a step."""
        self._started = self._mark()

    def stop(self) -> None:
        """Mark the end of the step :meth:`start` began."""
        if self._started is None:
            raise RuntimeError("StepTimer.stop() without a start()")
        self._marks.append((self._started, self._mark()))
        self._started = None

    def _mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = self._event()
        event.record()
        return event

    def seconds(self) -> list[float]:
        """Every step's seconds, in order (waits once for the device to finish them)."""
        if not self.cuda:
            return [end - start for start, end in self._marks]
        synchronize(self.device)
        return [start.elapsed_time(end) / 1000 for start, end in self._marks]


class NonFiniteLoss(ArithmeticError):
    """A training loss was NaN or infinite."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"loss became {value} at step {step}")
        self.step, self.value = step, value


class LossWatch:
    """Per-step losses kept on the device, so that a step never waits for its loss.

    Every ``every`` steps (and in :meth:`values`) the running sum is read, one synchronisation:
    it is accumulated in float64, so it is NaN or infinite exactly when some loss is (a
    float32 loss is below 3.4e38; a float64 sum overflows only past 1.8e308). The progress log
    reads the same sum (:meth:`mean_since`), so it costs no further synchronisation."""

    def __init__(self, every: int) -> None:
        if every < 1:
            raise ValueError(f"every={every}: must be a positive number of steps")
        self.every = every
        self._losses: list[Any] = []
        self._total: Any = None
        self._read: dict[int, float] = {0: 0.0}
        """Running sums read so far: steps -> sum of their losses."""

    def add(self, loss: Any) -> None:
        """Keep one step's loss; check the sum when ``every`` steps have passed."""
        value = loss.detach().double()
        self._losses.append(value)
        self._total = value if self._total is None else self._total + value
        if len(self._losses) % self.every == 0:
            self.check()

    def check(self) -> float:
        """The sum of the losses so far; raises :class:`NonFiniteLoss` naming the first step
        whose loss is not finite."""
        steps = len(self._losses)
        if steps not in self._read:
            total = float(self._total) if steps else 0.0
            if not math.isfinite(total):
                values = self._resolve()
                step = next(i for i, v in enumerate(values) if not math.isfinite(v))
                raise NonFiniteLoss(step, values[step])
            self._read[steps] = total
        return self._read[steps]

    def mean_since(self, step: int) -> float:
        """Mean loss of the steps after ``step`` (a count at which the sum was read) up to now."""
        steps = len(self._losses)
        if step not in self._read or step >= steps:
            raise ValueError(f"step={step}: the sum was read at steps {sorted(self._read)}")
        return (self.check() - self._read[step]) / (steps - step)

    def values(self) -> list[float]:
        """Every step's loss as a float (one synchronisation); checks them first."""
        self.check()
        return self._resolve()

    def _resolve(self) -> list[float]:
        import torch

        return torch.stack(self._losses).tolist() if self._losses else []


TFLOP = 1e12
PEAK_FLOPS: dict[str, dict[str, float]] = {
    # Dense (no 2:4 sparsity) peak FLOP/s per matmul precision, keyed by the exact name
    # torch.cuda.get_device_name() returns. Tensor-core figures are the data sheets' "with
    # sparsity" values halved, as their footnotes say ("one-half lower without sparsity").
    # Sources: NVIDIA H100 Tensor Core GPU datasheet (SXM, PCIe, NVL); NVIDIA H200 datasheet
    # (SXM, NVL); NVIDIA A100 datasheet (SXM4 and PCIe, 40 and 80 GB: one set of figures);
    # NVIDIA L4, L40S and A10 datasheets; NVIDIA Ada Lovelace architecture whitepaper, appendix
    # (GeForce RTX 4090: FP16/BF16 tensor throughput with FP32 accumulation, what autocast uses).
    # A missing key (or device) means no MFU. AWS's A10G has no NVIDIA data sheet: left out.
    "NVIDIA H100 80GB HBM3": {"bf16": 989.5, "fp16": 989.5, "tf32": 494.5, "fp32": 67},
    "NVIDIA H100 PCIe": {"bf16": 756.5, "fp16": 756.5, "tf32": 378, "fp32": 51},
    "NVIDIA H100 NVL": {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60},
    "NVIDIA H200": {"bf16": 989.5, "fp16": 989.5, "tf32": 494.5, "fp32": 67},
    "NVIDIA H200 NVL": {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60},
    "NVIDIA A100-SXM4-80GB": {"bf16": 312, "fp16": 312, "tf32": 156, "fp32": 19.5},
    "NVIDIA A100-SXM4-40GB": {"bf16": 312, "fp16": 312, "tf32": 156, "fp32": 19.5},
    "NVIDIA A100 80GB PCIe": {"bf16": 312, "fp16": 312, "tf32": 156, "fp32": 19.5},
    "NVIDIA A100-PCIE-40GB": {"bf16": 312, "fp16": 312, "tf32": 156, "fp32": 19.5},
    "NVIDIA L4": {"bf16": 121, "fp16": 121, "tf32": 60, "fp32": 30.3},
    "NVIDIA L40S": {"bf16": 362.05, "fp16": 362.05, "tf32": 183, "fp32": 91.6},
    "NVIDIA A10": {"bf16": 125, "fp16": 125, "tf32": 62.5, "fp32": 31.2},
    "NVIDIA GeForce RTX 4090": {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6},
}
"""Peak TFLOP/s (multiply by :data:`TFLOP`) by device name and matmul precision."""

MATMUL_PRECISION = {"bf16": "bf16", "fp16": "fp16", "fp32": "fp32", "nf4": "fp32"}
"""The precision the run's matrix products execute in. ``nf4`` dequantizes its weights to the
compute dtype, float32 here. ``int8`` has no entry: LLM.int8() multiplies in int8 forward and
in the input's dtype backward, so no one peak applies and no MFU is reported."""


def matmul_precision(precision: str) -> str | None:
    """The peak table's column for a run at ``precision``: float32 products run on the FP32
    units unless PyTorch was told to use TF32 tensor cores (``torch.set_float32_matmul_precision``
    other than its default ``"highest"``); ``None`` for ``int8``."""
    import torch

    compute = MATMUL_PRECISION.get(precision)
    if compute == "fp32" and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return compute


def peak_flops(device_name: str, precision: str) -> float | None:
    """The device's dense peak FLOP/s for the precision's matmuls: ``None`` for a device not in
    :data:`PEAK_FLOPS` by its exact name, or a precision without one peak (``int8``)."""
    compute = matmul_precision(precision)
    peak = PEAK_FLOPS.get(device_name, {}).get(compute) if compute else None
    return None if peak is None else peak * TFLOP


def model_flops_utilisation(
    tokens_per_s: float, matmul_params: int, trainable_params: int, device_name: str, precision: str
) -> dict[str, float | None]:
    from peftbench.planning.estimates import training_flops_per_token

    flops = training_flops_per_token(matmul_params, trainable_params) * tokens_per_s
    peak = peak_flops(device_name, precision)
    return {
        "train_model_flops_per_s": flops,
        "device_peak_flops_per_s": peak,
        "train_mfu": None if peak is None else flops / peak,
    }
