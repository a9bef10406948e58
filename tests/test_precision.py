"""Precision as a sweep axis: mixed precision and quantized (bitsandbytes) bases, on the CPU."""

from __future__ import annotations

import pytest

from peftbench.runner import execute
from peftbench.spec import resolve_spec

TINY = {"steps": 4, "batch_size": 8, "max_length": 32, "max_eval_examples": 32}


def run(tmp_path, method, precision):
    spec = resolve_spec("minilm-l2", method, "docstring-match", 0, {**TINY, "precision": precision})
    return execute(spec, tmp_path / f"{method}-{precision}", threads=1, lock_dir=tmp_path / "locks")


@pytest.fixture(scope="module")
def fp32_lora(tmp_path_factory):
    return run(tmp_path_factory.mktemp("fp32"), "lora", "fp32")


@pytest.mark.parametrize("precision", ["bf16", "int8", "nf4"])
def test_lora_trains_at_every_cpu_precision(tmp_path, fp32_lora, precision):
    record = run(tmp_path, "lora", precision)
    assert record["status"]["code"] == "ok", record["status"]
    assert record["spec"]["hparams"]["precision"] == precision
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


def test_full_fine_tuning_of_a_quantized_base_is_unsupported(tmp_path):
    record = run(tmp_path, "full", "nf4")
    assert record["status"]["code"] == "unsupported"
    assert "quantizes" in record["status"]["message"]


def test_bitfit_on_an_int8_base_trains_the_biases(tmp_path):
    record = run(tmp_path, "bitfit", "int8")
    assert record["status"]["code"] == "ok", record["status"]
    assert record["params"]["trainable_method"] > 0
