"""One-call GPU confirmation of the GPU paths that were fixed by reading (issue 15).

    python benchmarks/gpu_smoke.py            # on one GPU: under 5 minutes on an H100/H200

Prints one line per check, ``PASS``/``FAIL``/``INFO`` with its numbers, and exits 1 if any check
failed. The checks:

* ``device``: the GPU's exact name is in the peak table (``measure.PEAK_FLOPS``), with its peaks;
* ``select_device``: ``gpus=0`` is the CPU on a GPU host, ``gpus=1`` claims a GPU;
* ``quantize int8/nf4``: layers quantized on the GPU (``plugin.quantize``) match float32 after
  the model move ``accelerate.prepare`` makes, keep their scales on the GPU, and never hold the
  full-precision weights there (peak allocated memory); the old path (quantize on the CPU, then
  move) is reported as ``INFO``;
* ``load dtype``: a float16 checkpoint loads in float32, and fp16 mixed precision trains it
  (the grad scaler refuses float16 parameters: the old path is ``INFO``);
* ``mfu bf16/fp16/nf4``: LoRA on a 1.1B Llama configuration (random weights): 0 < MFU <= 1 with
  the table's peak, and the nf4 model counts as many matmul parameters as the bf16 one;
* ``step timing``: steps timed with CUDA events and no per-step synchronisation against the
  same steps synchronised each time (medians within 20%, no slower overall).

Without a CUDA device it runs the CPU-only check (``load dtype``'s first half) and exits 2 with
a "no CUDA device" message.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from peftbench.planning.estimates import matmul_params
from peftbench.plugin.model import ModelInfo, TransformersModel
from peftbench.run.measure import (
    PEAK_FLOPS,
    LossWatch,
    StepTimer,
    model_flops_utilisation,
    peak_flops,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' tiny models
from tests.tiny_models import TINY_VOCAB, fp16_checkpoint  # noqa: E402

LLAMA_1B = {  # TinyLlama-1.1B's shape
    "vocab_size": 32000,
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "max_position_embeddings": 2048,
}
TOLERANCE = {8: 0.05, 4: 0.2}
"""Relative error of quantized outputs against float32 (LLM.int8(), NF4)."""
WARMUP = 3


@dataclass
class Check:
    name: str
    status: str  # PASS, FAIL or INFO
    detail: str


def passes(name: str, ok: bool, detail: str) -> Check:
    return Check(name, "PASS" if ok else "FAIL", detail)


def relative_error(found: torch.Tensor, expected: torch.Tensor) -> float:
    return float((found.float() - expected.float()).norm() / expected.float().norm())


def check_device(device: str) -> list[Check]:
    name = torch.cuda.get_device_name(device)
    peaks = PEAK_FLOPS.get(name)
    detail = f"{name!r}: " + (
        ", ".join(f"{k} {v:g} TFLOP/s" for k, v in peaks.items())
        if peaks
        else f"not in PEAK_FLOPS (known: {', '.join(PEAK_FLOPS)}): add its data sheet's peaks"
    )
    return [passes("device", peaks is not None, detail)]


def check_select_device() -> list[Check]:
    from peftbench.run.device import select_device

    with tempfile.TemporaryDirectory() as locks:
        cpu, gpu = select_device(locks, gpus=0), select_device(locks, gpus=1, timeout=0)
    ok = cpu == "cpu" and gpu.startswith("cuda:")
    return [passes("select_device", ok, f"gpus=0 -> {cpu}, gpus=1 -> {gpu}")]


def mlp(layers: int, width: int) -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(*(torch.nn.Linear(width, width) for _ in range(layers)))


def bare_info(layers: int, width: int) -> ModelInfo:
    return ModelInfo("mlp", "mlp", layers, width, head_prefixes=(), has_bias=True)


def check_quantize(device: str, bits: int) -> list[Check]:
    from peftbench.plugin.quantize import quantize_linears

    layers, width = 16, 4096
    inputs = torch.randn(16, width, device=device) / width**0.5
    model = mlp(layers, width)
    with torch.no_grad():
        expected = copy.deepcopy(model).to(device)(inputs)
    full_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    quantize_linears(model, bare_info(layers, width), bits, device)
    peak = torch.cuda.max_memory_allocated(device) - start
    model.to(device)  # accelerate.prepare's move
    with torch.no_grad():
        error = relative_error(model(inputs), expected)
    first = model[0]
    if bits == 8:
        scales = {str(first.weight.data.device), str(first.weight.SCB.device)}
        scales |= {str(first.state.CB.device)} if first.state.CB is not None else set()
    else:
        scales = {str(first.weight.device), str(first.weight.quant_state.absmax.device)}
    name = f"quantize {'int8' if bits == 8 else 'nf4'}"
    checks = [
        passes(f"{name} output", error < TOLERANCE[bits], f"rel. error {error:.4f} vs fp32"),
        passes(f"{name} devices", scales == {str(torch.device(device))}, f"codes/scales {scales}"),
        passes(
            f"{name} memory",
            peak < full_bytes / 2,
            f"peak {peak / 2**20:.0f} MiB while quantizing {full_bytes / 2**20:.0f} MiB of fp32",
        ),
    ]
    del model
    return checks


def check_load_dtype_cpu(folder: Path) -> list[Check]:
    model = TransformersModel(str(folder)).load(num_labels=2, head="causal-lm").model
    dtypes = {str(p.dtype) for p in model.parameters()}
    return [passes("load dtype", dtypes == {"torch.float32"}, f"float16 checkpoint -> {dtypes}")]


def fp16_steps(model: torch.nn.Module, device: str, steps: int = 3) -> None:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(mixed_precision="fp16")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model, optimizer = accelerator.prepare(model, optimizer)
    ids = torch.randint(2, TINY_VOCAB["vocab_size"], (4, 64), device=device)
    for _ in range(steps):
        accelerator.backward(model(input_ids=ids, labels=ids).loss)
        optimizer.step()
        optimizer.zero_grad()


def check_load_dtype_gpu(folder: Path, device: str) -> list[Check]:
    source = TransformersModel(str(folder))
    model = source.load(num_labels=2, head="causal-lm").model
    try:
        fp16_steps(model, device)
        masters = {str(p.dtype) for p in model.parameters()}
        checks = [passes("load dtype fp16 training", masters == {"torch.float32"}, f"{masters}")]
    except Exception as error:
        checks = [passes("load dtype fp16 training", False, f"{type(error).__name__}: {error}")]
    try:
        fp16_steps(source.load(num_labels=2, head="causal-lm", dtype="float16").model, device)
        legacy = "trained"
    except Exception as error:  # the diagnosed grad-scaler refusal
        legacy = f"{type(error).__name__}: {str(error)[:100]}"
    checks.append(Check("load dtype old path", "INFO", f"float16 parameters: {legacy}"))
    return checks


def llama(device: str, layers: int) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("llama", **{**LLAMA_1B, "num_hidden_layers": layers})
    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config)


def with_lora(model: torch.nn.Module) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))


def train(
    model: torch.nn.Module, precision: str, device: str, steps: int, sync_each_step: bool
) -> tuple[list[float], float, int]:
    """Step seconds, wall seconds of the whole loop and tokens per step (batch 8 x 512)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    mixed = precision if precision in ("bf16", "fp16") else "no"
    accelerator = Accelerator(mixed_precision=mixed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    model, optimizer = accelerator.prepare(model, optimizer)
    ids = torch.randint(0, LLAMA_1B["vocab_size"], (8, 512), device=device)
    timer, watch, seconds = StepTimer(device), LossWatch(every=max(1, steps // 10)), []
    torch.cuda.synchronize(device)
    began = time.perf_counter()
    for _ in range(steps):
        if sync_each_step:  # the old loop: a synchronisation and a loss read per step
            torch.cuda.synchronize(device)
            start = time.perf_counter()
        else:
            timer.start()
        loss = model(input_ids=ids, labels=ids).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if sync_each_step:
            loss.item()
            torch.cuda.synchronize(device)
            seconds.append(time.perf_counter() - start)
        else:
            timer.stop()
            watch.add(loss)
    if not sync_each_step:
        watch.values()
        seconds = timer.seconds()
    torch.cuda.synchronize(device)
    return seconds, time.perf_counter() - began, ids.numel()


def check_mfu(device: str, steps: int, layers: int) -> list[Check]:
    from peftbench.plugin.quantize import quantize_linears

    name = torch.cuda.get_device_name(device)
    checks, counted = [], {}
    for precision in ("bf16", "fp16", "nf4"):
        if precision == "nf4":
            base = llama("cpu", layers)
            info = ModelInfo("llama", "llama", layers, 2048, head_prefixes=(), has_bias=False)
            quantize_linears(base, info, 4, device)
        else:
            base = llama(device, layers)
        model = with_lora(base)
        seconds, _, tokens = train(model, precision, device, steps, sync_each_step=False)
        timed = seconds[WARMUP:]
        tokens_per_s = tokens * len(timed) / sum(timed)
        counted[precision] = matmul_params(model)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        mfu = model_flops_utilisation(tokens_per_s, counted[precision], trainable, name, precision)
        value = mfu["train_mfu"]
        checks.append(
            passes(
                f"mfu {precision}",
                value is not None and 0 < value <= 1,
                f"{tokens_per_s:,.0f} tokens/s, N={counted[precision]:,}, "
                f"peak {peak_flops(name, precision)}, MFU {value}",
            )
        )
        del model, base
        torch.cuda.empty_cache()
    same = counted["nf4"] == counted["bf16"]
    checks.append(passes("mfu nf4 count", same, f"nf4 {counted['nf4']:,} bf16 {counted['bf16']:,}"))
    return checks


def check_step_timing(device: str, steps: int, layers: int) -> list[Check]:
    results = {}
    for sync in (False, True):
        model = with_lora(llama(device, layers))
        seconds, wall, _ = train(model, "bf16", device, steps, sync_each_step=sync)
        results[sync] = (statistics.median(seconds[WARMUP:]), wall)
        del model
        torch.cuda.empty_cache()
    (events, wall_events), (synced, wall_synced) = results[False], results[True]
    close = abs(events - synced) / synced < 0.2
    detail = (
        f"median step: events {events * 1e3:.1f} ms, per-step sync {synced * 1e3:.1f} ms; "
        f"loop wall: {wall_events:.2f} s vs {wall_synced:.2f} s"
    )
    return [passes("step timing", close and wall_events <= 1.05 * wall_synced, detail)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20, help="training steps per run (20)")
    parser.add_argument("--layers", type=int, default=22, help="Llama layers (22: 1.1B)")
    args = parser.parse_args(argv)
    checks: list[Check] = []

    def run(check: Callable[[], list[Check]], label: str) -> None:
        started = time.perf_counter()
        try:
            found = check()
        except Exception as error:  # one broken check must not hide the others
            found = [Check(label, "FAIL", f"{type(error).__name__}: {error}")]
        for item in found:
            print(f"{item.status} {item.name}: {item.detail}", flush=True)
        print(f"  ({label}: {time.perf_counter() - started:.1f} s)", flush=True)
        checks.extend(found)

    with tempfile.TemporaryDirectory() as folder:
        checkpoint = fp16_checkpoint(Path(folder))
        run(lambda: check_load_dtype_cpu(checkpoint), "load dtype")
        if not torch.cuda.is_available():
            print(
                f"gpu_smoke: no CUDA device (torch {torch.__version__}, CUDA build "
                f"{torch.version.cuda}): the GPU checks did not run; run this on a GPU host",
                file=sys.stderr,
            )
            return 2
        device = "cuda:0"
        torch.cuda.set_device(device)
        run(lambda: check_device(device), "device")
        run(check_select_device, "select_device")
        for bits in (8, 4):
            run(lambda bits=bits: check_quantize(device, bits), f"quantize {bits}-bit")
        run(lambda: check_load_dtype_gpu(checkpoint, device), "load dtype on GPU")
    run(lambda: check_mfu(device, args.steps, args.layers), "mfu")
    run(lambda: check_step_timing(device, args.steps, args.layers), "step timing")
    failed = [c.name for c in checks if c.status == "FAIL"]
    print(f"gpu_smoke: {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
