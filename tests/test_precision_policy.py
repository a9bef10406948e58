"""The precision policy (peftbench.run.precision): auto detection, storage dtypes, master weights.
CPU-only logic; speed is measured by benchmarks/precision.py, not here."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from peftbench.run.precision import Policy, cpu_flags, resolve_auto

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse sse2 avx2 avx512f {extra}
bogomips\t: 5199.99
"""


@pytest.mark.parametrize(
    ("extra", "precision"),
    [("amx_bf16 amx_tile", "bf16"), ("avx512_bf16", "bf16"), ("avx512bw", "fp32"), ("", "fp32")],
)
def test_auto_on_the_cpu_follows_the_native_bf16_flags(extra, precision):
    cpuinfo = CPUINFO.format(extra=extra)
    flags = cpu_flags(cpuinfo)
    assert "avx512f" in flags and ("amx_bf16" in flags) == ("amx_bf16" in extra)
    resolved, reason = resolve_auto("cpu", cpuinfo)
    assert resolved == precision
    assert ("natively" in reason) == (precision == "bf16")
    if precision == "fp32":
        assert "amx_bf16" in reason and "emulated" in reason


def test_auto_without_cpuinfo_or_on_an_unknown_device_is_fp32():
    assert cpu_flags("no flags line here") == set()
    assert resolve_auto("cpu", "")[0] == "fp32"
    assert resolve_auto("mps", CPUINFO.format(extra="amx_bf16")) == (
        "fp32",
        "no native bf16 known for device 'mps'",
    )


@pytest.mark.parametrize(("capability", "precision"), [((8, 0), "bf16"), ((7, 5), "fp32")])
def test_auto_on_cuda_needs_compute_capability_8(monkeypatch, capability, precision):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    resolved, reason = resolve_auto("cuda:0", "")
    assert resolved == precision
    assert f"{capability[0]}.{capability[1]}" in reason


def test_a_run_records_what_auto_resolved_to_and_why():
    policy = Policy.for_run("auto", "cpu", CPUINFO.format(extra="amx_bf16"))
    assert (policy.precision, policy.dtype) == ("bf16", torch.bfloat16)
    assert policy.reason.startswith("auto: ") and "amx_bf16" in policy.reason
    assert Policy.for_run("fp32", "cpu").reason == "requested"


class Tiny(nn.Module):
    """An embedding, a frozen and a trainable linear layer, a norm: each kind the policy
    treats differently."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.frozen = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.frozen(self.embed(ids)))).float().square().mean()


def tiny(precision: str, seed: int = 0) -> tuple[Tiny, Policy]:
    torch.manual_seed(seed)
    model, policy = Tiny(), Policy(precision, "cpu")
    policy.prepare_base(model)
    for frozen in (model.embed, model.frozen, model.norm.weight):  # as a method would
        frozen.requires_grad_(False)
    policy.prepare_adapted(model)
    return model, policy


def test_fp32_is_left_alone():
    model, policy = tiny("fp32")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert isinstance(policy.autocast(), contextlib.nullcontext)
    assert policy.optimizer_options() == {"fused": True}


def test_bf16_stores_frozen_modules_in_bf16_and_trains_fp32_masters():
    model, policy = tiny("bf16")
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert dtypes == {
        "embed.weight": torch.bfloat16,
        "frozen.weight": torch.bfloat16,
        "frozen.bias": torch.bfloat16,
        "norm.weight": torch.float32,  # its module trains a parameter (the bias): all fp32
        "norm.bias": torch.float32,
        "head.weight": torch.float32,  # trainable: the master copy
        "head.bias": torch.float32,
    }
    head = model.head.weight.detach()
    assert torch.equal(head, head.to(torch.bfloat16).float())  # rounded to what bf16 holds
    with policy.autocast():
        assert model.head(torch.ones(2, 8)).dtype == torch.bfloat16  # the AMX matmul


def test_restore_puts_the_bf16_storage_back_in_fp32_exactly():
    model, policy = tiny("bf16")
    assert model.frozen.weight.dtype == torch.bfloat16
    stored = model.frozen.weight.detach().clone()
    policy.restore(model)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert torch.equal(model.frozen.weight, stored.float())


def one_step(precision: str) -> tuple[Tiny, dict[str, torch.Tensor], torch.optim.Optimizer]:
    model, policy = tiny(precision)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=1e-2, weight_decay=0.0, **policy.optimizer_options()
    )
    with policy.autocast():
        loss = model(torch.tensor([[1, 2, 3], [4, 5, 6]]))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer.step()
    return model, grads, optimizer


def test_one_bf16_step_updates_the_fp32_masters_as_adamw_says():
    before, _ = tiny("bf16")
    model, grads, optimizer = one_step("bf16")
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            assert torch.equal(parameter, before.get_parameter(name))
            continue
        grad = grads[name]
        assert parameter.dtype == grad.dtype == torch.float32
        state = optimizer.state[parameter]
        assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32
        # AdamW's first step: m̂ = g, v̂ = g², so p ← p − lr · g / (|g| + eps)
        expected = before.get_parameter(name) - 1e-2 * grad / (grad.abs() + 1e-8)
        torch.testing.assert_close(parameter, expected, rtol=0, atol=1e-6)


def test_bf16_gradients_match_fp32_within_bf16_rounding():
    _, bf16, _ = one_step("bf16")
    _, fp32, _ = one_step("fp32")
    assert bf16.keys() == fp32.keys() and "head.weight" in bf16
    for name in bf16:
        torch.testing.assert_close(bf16[name], fp32[name], rtol=0.05, atol=2e-3)


def bert(attention: str = "sdpa") -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        attn_implementation=attention,
    )
    return BertForSequenceClassification(config)


@pytest.mark.parametrize(("device", "attention"), [("cpu", "eager"), ("cuda", "sdpa")])
def test_bf16_attention_is_eager_on_the_cpu_only(device, attention):
    model = bert()
    Policy("bf16", device).prepare_base(model)
    assert model.config._attn_implementation == attention
    fp32 = bert()
    Policy("fp32", "cpu").prepare_base(fp32)
    assert fp32.config._attn_implementation == "sdpa"


def test_lora_on_a_bf16_base_trains_fp32_adapters():
    from peft import LoraConfig, get_peft_model

    model, policy = bert(), Policy("bf16", "cpu")
    policy.prepare_base(model)
    model = get_peft_model(model, LoraConfig(r=2, target_modules=["query", "value"]))
    policy.prepare_adapted(model)
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    frozen_linear = model.get_parameter("base_model.model.bert.encoder.layer.0.output.dense.weight")
    assert trainable == {torch.float32} and frozen_linear.dtype == torch.bfloat16
    with policy.autocast():
        loss = model(input_ids=torch.tensor([[1, 2, 3]]), labels=torch.tensor([1])).loss
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
