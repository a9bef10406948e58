"""measure.py on the CPU: the peak table's exact names, the FLOP counts' parameters (tied heads,
4-bit weights), and the timing helpers' logic (no synchronisation inside a step)."""

from __future__ import annotations

import math
import time

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from peftbench.planning.estimates import matmul_params
from peftbench.run import measure
from peftbench.run.measure import (
    PEAK_FLOPS,
    TFLOP,
    LossWatch,
    NonFiniteLoss,
    StepTimer,
    peak_flops,
)

# Peak table -------------------------------------------------------------------------------


def test_l40s_is_not_the_l4():
    assert peak_flops("NVIDIA L40S", "bf16") == 362.05 * TFLOP
    assert peak_flops("NVIDIA L4", "bf16") == 121 * TFLOP


@pytest.mark.parametrize(
    "name", ["NVIDIA H100 NVL", "NVIDIA A100 80GB PCIe", "NVIDIA A100-PCIE-40GB", "NVIDIA H200"]
)
def test_devices_the_old_table_missed_are_known(name):
    assert peak_flops(name, "fp16") is not None


@pytest.mark.parametrize(
    "name", ["L4", "NVIDIA L4 (MIG)", "NVIDIA H100", "nvidia l4", "NVIDIA A10G"]
)
def test_names_match_exactly_or_not_at_all(name):
    assert peak_flops(name, "bf16") is None


def test_every_entry_is_a_dense_peak_per_precision():
    for name, peaks in PEAK_FLOPS.items():
        assert name.startswith("NVIDIA "), name
        assert set(peaks) == {"bf16", "fp16", "tf32", "fp32"}, name
        # Tensor cores: bf16 = fp16 = 2 x tf32 on every listed part; FP32 units at most TF32.
        assert peaks["bf16"] == peaks["fp16"] == pytest.approx(2 * peaks["tf32"], rel=0.02), name
        assert 0 < peaks["fp32"] <= peaks["tf32"], name


def test_precisions_pick_their_matmul_units():
    name = "NVIDIA H100 80GB HBM3"
    assert peak_flops(name, "fp32") == peak_flops(name, "nf4") == 67 * TFLOP
    assert peak_flops(name, "int8") is None  # int8 forward, float backward: no one peak


def test_fp32_uses_the_tf32_peak_when_torch_allows_tf32():
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        assert peak_flops("NVIDIA A100-SXM4-80GB", "fp32") == 156 * TFLOP
    finally:
        torch.set_float32_matmul_precision(before)
    assert peak_flops("NVIDIA A100-SXM4-80GB", "fp32") == 19.5 * TFLOP


# Matmul parameters ----------------------------------------------------------------------

LLAMA = {
    "model_type": "llama",
    "vocab_size": 101,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}
GPT2 = {"model_type": "gpt2", "vocab_size": 101, "n_embd": 32, "n_layer": 2, "n_head": 4}


def decoder(fields: dict, tied: bool) -> torch.nn.Module:
    values = dict(fields)
    kind = values.pop("model_type")
    config = AutoConfig.for_model(kind, tie_word_embeddings=tied, **values)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("fields", [LLAMA, GPT2], ids=["llama", "gpt2"])
def test_a_tied_head_is_a_matmul(fields):
    tied, untied = decoder(fields, tied=True), decoder(fields, tied=False)
    assert tied.get_output_embeddings().weight is tied.get_input_embeddings().weight
    head = untied.get_output_embeddings().weight.numel()
    assert head == fields["vocab_size"] * 32
    # The same products per token whether or not the head shares the embedding table.
    assert matmul_params(tied) == matmul_params(untied)
    lookups = sum(m.weight.numel() for m in untied.modules() if isinstance(m, torch.nn.Embedding))
    total = sum(p.numel() for p in untied.parameters())
    assert matmul_params(untied) == total - lookups


def test_four_bit_weights_count_their_logical_elements():
    pytest.importorskip("bitsandbytes")
    from peft import LoraConfig, get_peft_model

    from peftbench.plugin.model import model_info
    from peftbench.plugin.quantize import quantize_linears

    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    full = get_peft_model(decoder(LLAMA, tied=True), lora)
    base = decoder(LLAMA, tied=True)
    info = model_info("tiny", base, head="causal-lm")
    assert quantize_linears(base, info, 4, "cpu") == 2 * 7  # q, k, v, o, gate, up, down
    quantized = get_peft_model(base, lora)
    packed = sum(p.numel() for p in quantized.parameters())
    assert packed < sum(p.numel() for p in full.parameters())  # the storage is packed...
    assert matmul_params(quantized) == matmul_params(full)  # ...the products are not


# Timing helpers -------------------------------------------------------------------------


def test_step_timer_on_the_cpu_times_each_step():
    timer = StepTimer("cpu")
    for pause in (0.02, 0.05):
        timer.start()
        time.sleep(pause)
        timer.stop()
    first, second = timer.seconds()
    assert 0.02 <= first < second and second >= 0.05


class FakeEvent:
    """A CUDA event stand-in that stamps the host clock when recorded (logic only)."""

    def __init__(self, enable_timing: bool = False) -> None:
        assert enable_timing
        self.at: float | None = None

    def record(self) -> None:
        self.at = time.perf_counter()

    def elapsed_time(self, end: FakeEvent) -> float:
        return (end.at - self.at) * 1000  # milliseconds, as torch's


def test_step_timer_on_cuda_synchronises_once_at_the_end(monkeypatch):
    syncs: list[str] = []
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: syncs.append(device))
    timer = StepTimer("cuda:0")
    for _ in range(3):
        timer.start()
        time.sleep(0.01)
        timer.stop()
    assert syncs == []  # nothing waited for the device inside or between steps
    seconds = timer.seconds()
    assert syncs == ["cuda:0"]
    assert len(seconds) == 3 and all(0.01 <= s < 1 for s in seconds)


def test_step_timer_refuses_a_stop_without_a_start():
    with pytest.raises(RuntimeError, match="without a start"):
        StepTimer("cpu").stop()


def test_loss_watch_returns_every_loss_exactly():
    losses = [2.5, 1.25, 0.1, 3e-8, 7.0]
    watch = LossWatch(every=2)
    for value in losses:
        watch.add(torch.tensor(value))
    assert watch.values() == [float(torch.tensor(v)) for v in losses]  # float32 values
    assert watch.mean_since(0) == pytest.approx(sum(watch.values()) / 5)


@pytest.mark.parametrize(
    ("bad", "at"), [([math.nan], 2), ([math.inf], 3), ([math.inf, -math.inf], 1)]
)
def test_loss_watch_finds_the_first_non_finite_step_at_its_next_check(bad, at):
    watch = LossWatch(every=5)
    values = [1.0] * 7
    values[at : at + len(bad)] = bad
    for step in range(4):
        watch.add(torch.tensor(values[step]))  # no check before 5 steps: nothing raised
    with pytest.raises(NonFiniteLoss, match=f"at step {at}") as raised:
        watch.add(torch.tensor(values[4]))
    assert raised.value.step == at


def test_loss_watch_sums_in_float64_so_large_finite_losses_stay_finite():
    watch = LossWatch(every=4)
    for _ in range(8):
        watch.add(torch.tensor(3e38))  # float32 sum would overflow to inf
    assert math.isfinite(watch.check())


def test_loss_watch_progress_mean_reads_the_running_sum(monkeypatch):
    watch = LossWatch(every=3)
    for value in (1.0, 2.0, 3.0, 10.0, 20.0, 30.0):
        watch.add(torch.tensor(value))
    assert watch.mean_since(3) == 20.0
    with pytest.raises(ValueError, match=r"step=2: .*\[0, 3, 6\]"):
        watch.mean_since(2)
    with pytest.raises(ValueError, match="positive"):
        LossWatch(every=0)


def test_phase_log_lines_are_unchanged(caplog):
    record = {"timing": {}, "memory": {}}
    with caplog.at_level("INFO", logger=measure.__name__), measure.phase("eval", "cpu", record):
        pass
    assert [r.getMessage() for r in caplog.records][0] == "phase eval started"
    assert caplog.records[-1].getMessage().startswith("phase eval done in ")
    assert record["timing"]["eval_s"] >= 0
