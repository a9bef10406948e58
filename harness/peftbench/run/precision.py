"""The precision policy: what a ``precision`` value runs as on a device, and how a model is
prepared for it (docs/measurement.md, *Precision*).

``bf16`` is mixed precision, planned for the CPU's AMX/AVX-512 BF16 kernels as much as for
GPUs. Around a run::

    policy = Policy.for_run(precision, device)  # "auto" resolved: policy.precision, .reason
    policy.prepare_base(model)       # before the method: weights rounded to bf16 values
    model = adapt(model, ...)        # the snapshot is of that base (as for quantized bases)
    policy.prepare_adapted(model)    # frozen ones stored in bf16; trainable ones fp32 masters
    optimizer = torch.optim.AdamW(params, **policy.optimizer_options())
    with policy.autocast():          # forward (and loss) only; backward outside
        loss = model(**batch).loss
    policy.restore(model)            # before merging and counting: fp32 storage again

What each step buys, measured on minilm-l6 (one thread, Xeon with AMX): the forward under
``torch.autocast`` runs every matmul on the bf16 kernels, with fp32 weights cast once per
forward; frozen weights stored in bf16 skip that cast (LoRA: 15-18% of a step) and halve
their memory; on the CPU, attention runs the eager way (bf16 ``bmm``): SDPA's flash backward
(taken without attention dropout) is ten times slower in bf16 than in fp32, and its math path
(with dropout) slower than the eager form; the fused AdamW kernel takes a third of the
for-each-parameter AdamW's time at every precision. ``torch.compile`` is not part of it:
minutes to compile, and its fused kernels are no faster here than the eager ops (slower for
bf16 LoRA). ``benchmarks/precision.py`` measures it (``--compile`` that).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

AUTO = "auto"
MIXED = ("bf16",)
"""Precisions this policy runs (fp16 stays with accelerate: it needs loss scaling)."""
NATIVE_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
"""``/proc/cpuinfo`` flags of CPUs that multiply bf16 in hardware (else oneDNN emulates it)."""
CPUINFO = Path("/proc/cpuinfo")
STORED = (nn.Linear, nn.LayerNorm, nn.Embedding)
"""Modules whose parameters ``bf16`` stores in bf16 where a method leaves them frozen."""


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` text (read when ``None``; empty where
    there is none, e.g. macOS)."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:
            return set()
    match = re.search(r"^flags\s*:(.*)$", cpuinfo, re.MULTILINE)
    return set(match.group(1).split()) if match else set()


def resolve_auto(device: str, cpuinfo: str | None = None) -> tuple[str, str]:
    """The precision ``auto`` means on ``device`` and why: ``bf16`` where the device computes
    it natively (AMX / AVX-512 BF16 CPUs, CUDA compute capability ≥ 8), ``fp32`` elsewhere."""
    kind = device.split(":")[0]
    if kind == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major >= 8 and torch.cuda.is_bf16_supported():
            return "bf16", f"CUDA compute capability {major}.{minor} has bf16 tensor cores"
        return "fp32", f"CUDA compute capability {major}.{minor} < 8.0: no bf16 tensor cores"
    if kind != "cpu":
        return "fp32", f"no native bf16 known for device {device!r}"
    native = [flag for flag in NATIVE_BF16_CPU_FLAGS if flag in cpu_flags(cpuinfo)]
    if not native:
        return "fp32", f"the CPU has none of {', '.join(NATIVE_BF16_CPU_FLAGS)}: bf16 is emulated"
    if not torch.backends.mkldnn.is_available():
        return "fp32", f"the CPU has {native[0]} but this torch build lacks oneDNN"
    return "bf16", f"the CPU multiplies bf16 natively ({', '.join(native)}, oneDNN)"


@dataclass(frozen=True)
class Policy:
    """How one run computes: ``precision`` is what runs (``auto`` resolved), ``reason`` why."""

    precision: str
    device: str
    reason: str = "requested"
    _rounded: set[int] = field(default_factory=set, compare=False, repr=False)
    """Ids of the parameters :meth:`prepare_base` rounded to the compute dtype."""

    @classmethod
    def for_run(cls, requested: str, device: str, cpuinfo: str | None = None) -> Policy:
        if requested == AUTO:
            precision, reason = resolve_auto(device, cpuinfo)
            return cls(precision, device, f"auto: {reason}")
        return cls(requested, device)

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast compute dtype, ``None`` when this policy does not autocast."""
        return torch.bfloat16 if self.precision in MIXED else None

    @property
    def on_cpu(self) -> bool:
        return self.device.split(":")[0] == "cpu"

    def prepare_base(self, model: nn.Module) -> None:
        """Before the method is applied: round the parameters of the linear layers, norms and
        embeddings to the compute dtype, still in fp32, so that the base the counts compare
        against holds the values the run computes with; on the CPU, switch SDPA attention to
        the eager form."""
        if self.dtype is None:
            return
        for module in model.modules():
            if type(module) in STORED:  # not quantized or method-made subclasses
                for parameter in module.parameters(recurse=False):
                    parameter.data = parameter.data.to(self.dtype).float()
                    self._rounded.add(id(parameter))
        config = getattr(model, "config", None)
        if self.on_cpu and getattr(config, "_attn_implementation", None) == "sdpa":
            model.set_attn_implementation("eager")

    def prepare_adapted(self, model: nn.Module) -> None:
        """After the method: a rounded module the method left wholly frozen is stored in the
        compute dtype (exact; no cast per forward, and a bf16 residual stream); every other
        parameter stays fp32, trainable ones as the master weights AdamW updates, cast to bf16
        in the forward under :meth:`autocast`."""
        for module in model.modules():
            own = list(module.parameters(recurse=False))
            if own and all(id(p) in self._rounded and not p.requires_grad for p in own):
                for parameter in own:
                    parameter.data = parameter.data.to(self.dtype)

    def restore(self, model: nn.Module) -> None:
        """After training and evaluation: the parameters stored in the compute dtype back in
        fp32 (exact), so that a method merges into the base, and the counts measure the
        update, as at fp32 (merged into bf16 weights, a small update would round away)."""
        for parameter in model.parameters():
            if id(parameter) in self._rounded and parameter.dtype != torch.float32:
                parameter.data = parameter.data.float()

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context the forward pass runs in (a no-op at fp32 and quantized precisions)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.split(":")[0], dtype=self.dtype)

    def optimizer_options(self) -> dict[str, bool]:
        """AdamW options: the fused kernel (one pass over each tensor) at every precision."""
        return {"fused": True}
