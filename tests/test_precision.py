"""Precision as a sweep axis: mixed precision and quantized (bitsandbytes) bases, on the CPU."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook

from peftbench.planning.spec import resolve_spec
from peftbench.run.runner import execute

TINY = {"steps": 4, "batch_size": 8, "max_length": 32, "max_eval_examples": 32}
TRAIN, EVAL = True, False  # whether autograd records the forward


@contextmanager
def linear_dtypes() -> Iterator[Counter]:
    """Counts of (training, output dtype) over every ``nn.Linear`` forward (bitsandbytes'
    quantized layers and the layers under peft's included) while the block runs: the dtype
    the matmul ran in (autocast casts a linear layer's inputs and weight, then multiplies)."""
    seen: Counter = Counter()

    def record(module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(module, nn.Linear):
            seen[torch.is_grad_enabled(), output.dtype] += 1

    handle = register_module_forward_hook(record)
    try:
        yield seen
    finally:
        handle.remove()


def run(tmp_path, method, precision, tokenized) -> tuple[dict[str, Any], Counter]:
    """The record of a tiny run through the runner's own entry point, and its linear dtypes."""
    spec = resolve_spec("minilm-l2", method, "docstring-match", 0, {**TINY, "precision": precision})
    data = tokenized(spec)
    with linear_dtypes() as dtypes:
        record = execute(
            spec, tmp_path / f"{method}-{precision}", tokenized_dir=data, threads=1,
            lock_dir=tmp_path / "locks",
        )  # fmt: skip
    return record, dtypes


@pytest.fixture(scope="module")
def fp32_run(tmp_path_factory, tokenized):
    return run(tmp_path_factory.mktemp("fp32"), "lora", "fp32", tokenized)


def test_fp32_matmuls_run_in_fp32(fp32_run):
    record, dtypes = fp32_run
    assert record["status"]["code"] == "ok", record["status"]
    assert set(dtypes) == {(TRAIN, torch.float32), (EVAL, torch.float32)}


@pytest.mark.parametrize("precision", ["bf16", "int8", "nf4"])
def test_lora_trains_at_every_cpu_precision(tmp_path, tokenized, fp32_run, precision):
    fp32_lora = fp32_run[0]
    record, dtypes = run(tmp_path, "lora", precision, tokenized)
    assert record["status"]["code"] == "ok", record["status"]
    assert record["spec"]["hparams"]["precision"] == precision
    # bf16 is autocast: every linear layer multiplies in bf16, in training and evaluation, so
    # the losses differ from fp32's (same seed and data); the trainable (master) weights,
    # their gradients and AdamW's state stay in fp32, the frozen base is stored in bf16
    # (peftbench.run.precision). Quantized bases dequantize to the fp32 compute dtype.
    compute = torch.bfloat16 if precision == "bf16" else torch.float32
    assert set(dtypes) == {(TRAIN, compute), (EVAL, compute)}
    if precision == "bf16":
        assert record["training"]["losses"] != fp32_lora["training"]["losses"]
        expected, fp32_expected = record["memory"]["expected"], fp32_lora["memory"]["expected"]
        assert expected["gradients_bytes"] == fp32_expected["gradients_bytes"]
        assert expected["optimizer_state_bytes"] == fp32_expected["optimizer_state_bytes"]
        assert expected["weights_bytes"] < 0.55 * fp32_expected["weights_bytes"]
    # Counts are logical elements whatever the storage: the same as in fp32.
    for key in ("base_total", "trainable_method", "trainable_head"):
        assert record["params"][key] == fp32_lora["params"][key], key
    if precision in ("int8", "nf4"):
        # The linear layers' weights (2 layers x (4·384² + 2·384·1536) + the pooler's 384²)
        # take 1 byte (int8) or half a byte plus scales (nf4) per element instead of 4.
        linear = 2 * (4 * 384 * 384 + 2 * 384 * 1536) + 384 * 384
        saved = (
            fp32_lora["memory"]["expected"]["weights_bytes"]
            - record["memory"]["expected"]["weights_bytes"]
        )
        if precision == "int8":
            assert saved == 3 * linear
        else:
            assert 3.3 * linear < saved < 3.5 * linear
        assert record["params"]["added"] == fp32_lora["params"]["added"]  # base = quantized base


def test_full_fine_tuning_of_a_quantized_base_is_unsupported(tmp_path, tokenized):
    record, _ = run(tmp_path, "full", "nf4", tokenized)
    assert record["status"]["code"] == "unsupported"
    assert "quantizes" in record["status"]["message"]


def test_bitfit_on_an_int8_base_trains_the_biases(tmp_path, tokenized):
    record, _ = run(tmp_path, "bitfit", "int8", tokenized)
    assert record["status"]["code"] == "ok", record["status"]
    assert record["params"]["trainable_method"] > 0
