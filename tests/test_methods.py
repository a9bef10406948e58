"""Every registered method on a real model (minilm-l2), a tiny GPT-2 classifier, and tiny GPT-2
and Llama language models (causal-LM head): it trains exactly the parameters it says
(closed-form counts), a short run of its own parameters lowers the loss, and its artifact
survives a safetensors round trip and rebuilds the tuned model from a freshly adapted one."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from peftbench import METHODS, MODELS, TASKS
from peftbench.methods._modules import LAYOUTS
from peftbench.plugin.method import Method, is_head
from peftbench.plugin.model import ModelInfo, model_info
from tests.tiny_models import TINY_DECODERS, shrunk_config, tiny_config

STEPS = 20
BATCH = 8
MAX_LENGTH = 32
HEAD_STD = 1.0
"""A freshly initialised head (std 0.02) leaves every logit near zero, a plateau that 20 steps
at a paper's learning rate hardly leave; a larger random head gives the method a gradient."""
L, D, FF = 2, 384, 1536  # minilm-l2: layers, width, FFN width


def lora(r: int, shapes: list[tuple[int, int]]) -> int:
    return sum(r * (d_in + d_out) for d_in, d_out in shapes)


def adapter(m: int, d: int = D) -> int:
    return 2 * d * m + m + d


def prefix_mlp(length: int, hidden: int) -> int:
    """Trainable parameters of a Li & Liang prefix MLP: embeddings + d→h→2·L·d."""
    return length * D + D * hidden + hidden + hidden * 2 * L * D + 2 * L * D


def p_tuning_encoder(p: int, h: int) -> int:
    """peft's P-tuning encoder: p embeddings, a 2-layer bidirectional LSTM, a 2-layer MLP."""
    lstm = 2 * (4 * h * (D + h) + 8 * h) + 2 * (4 * h * (2 * h + h) + 8 * h)
    return p * D + lstm + (2 * h * 2 * h + 2 * h) + (2 * h * D + D)


GATE = D + 1
ATTENTION = [(D, D)] * 4  # query, key, value, attention output
LAYER_LINEARS = [*ATTENTION, (D, FF), (FF, D)]
ALL_LINEAR = LAYER_LINEARS * L + [(D, D)]  # and the pooler
QUERY_VALUE = [(D, D)] * 2 * L

# Per method on minilm-l2 with default hyperparameters: trainable parameters outside the head,
# and the size of the artifact when it differs (None: not checked).
EXPECTED: dict[str, tuple[int | None, int | None]] = {
    "full": (None, None),  # checked against the backbone size below
    "bitfit": (None, None),  # checked against the backbone's biases below
    "freeze": (None, None),  # checked against layer 1 and the pooler below
    "lora": (lora(8, QUERY_VALUE), None),
    "lora_int8": (lora(8, QUERY_VALUE), None),
    "qlora": (lora(64, ALL_LINEAR), None),
    "adalora": (sum(12 * (i + o) + 12 for i, o in ALL_LINEAR), None),
    "vera": (2 * L * (256 + D), None),
    "ia3": (L * (2 * D + FF), None),
    "houlsby": (L * (2 * adapter(64) + 2 * 2 * D), None),
    "pfeiffer": (L * adapter(D // 16), None),
    "prompt_tuning": (20 * D, None),
    "p_tuning": (p_tuning_encoder(20, 128), 20 * D),
    "prefix_tuning": (prefix_mlp(10, 512), 2 * L * 10 * D),
    "p_tuning_v2": (2 * L * 20 * D, None),
    "mam": (prefix_mlp(30, 512) + L * adapter(512), 2 * L * 30 * D + L * adapter(512)),
    "unipelt": (
        prefix_mlp(10, 512) + L * (GATE + 2 * (lora(8, [(D, D)]) + GATE) + adapter(24) + GATE),
        2 * L * 10 * D + L * (GATE + 2 * (lora(8, [(D, D)]) + GATE) + adapter(24) + GATE),
    ),
}


@pytest.fixture(scope="module")
def minilm() -> tuple[Callable[[], nn.Module], ModelInfo, dict[str, torch.Tensor]]:
    loaded = MODELS.get("minilm-l2").load(num_labels=2)
    randomize_head(loaded.model, loaded.info)

    def build() -> nn.Module:
        return copy.deepcopy(loaded.model)

    rows = TASKS.get("docstring-match").load()["train"].select(range(BATCH)).to_dict()
    tokenizer = MODELS.get("minilm-l2").tokenizer()
    batch = tokenizer(
        rows["name"],
        rows["text"],
        truncation=True,
        max_length=MAX_LENGTH,
        padding=True,
        return_tensors="pt",
    )
    batch["labels"] = torch.tensor(rows["label"])
    return build, loaded.info, dict(batch)


@pytest.fixture(scope="module")
def gpt2() -> tuple[Callable[[], nn.Module], ModelInfo, dict[str, torch.Tensor]]:
    from transformers import GPT2ForSequenceClassification

    config = tiny_config("gpt2", num_labels=2)

    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(config)
    info = model_info("gpt2-tiny", model)
    randomize_head(model, info)

    def build() -> nn.Module:
        return copy.deepcopy(model)

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 128, (BATCH, 16), generator=generator)  # no padding
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": torch.arange(BATCH) % 2,
    }
    return build, info, batch


@pytest.fixture(scope="module", params=sorted(TINY_DECODERS))
def causal_lm(request) -> tuple[Callable[[], nn.Module], ModelInfo, dict[str, torch.Tensor]]:
    """A tiny random decoder with its language-model head, and a batch posed as a causal-LM
    task: a right-padded prompt whose last token (the answer) alone is a label."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(request.param))
    info = model_info(f"{request.param}-tiny", model, head="causal-lm")

    def build() -> nn.Module:
        return copy.deepcopy(model)

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 128, (BATCH, 16), generator=generator)
    lengths = 12 + torch.arange(BATCH) % 5  # 12 to 16 tokens: padded on the right
    mask = (torch.arange(16)[None] < lengths[:, None]).long()
    ids = ids * mask
    labels = torch.full_like(ids, -100)
    rows = torch.arange(BATCH)
    labels[rows, lengths - 1] = 2 + rows % 2  # the answer: token 2 or 3
    ids[rows, lengths - 1] = labels[rows, lengths - 1]
    return build, info, {"input_ids": ids, "attention_mask": mask, "labels": labels}


OWN_METHODS = [name for name in METHODS.names() if not name.startswith("peft:")]
"""peftbench's own methods (peft's tuners, ``peft:<tuner>``: tests/test_peft_tuners.py)."""


def randomize_head(model: nn.Module, info: ModelInfo) -> None:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if is_head(name, info):
                p.copy_(torch.randn(p.shape, generator=generator) * HEAD_STD)


def adapt(method: Method, build: Callable[[], nn.Module], info: ModelInfo, seed: int):
    """A freshly adapted model in eval mode (no dropout: deterministic losses and logits). The
    head stays frozen, so what training changes is the method's doing."""
    torch.manual_seed(seed)
    hp: dict[str, Any] = {**method.defaults, "steps": STEPS}
    model = method.apply(build(), hp, info)
    for name, p in model.named_parameters():
        if method.is_head(name, info):
            p.requires_grad_(False)
    return model.eval(), hp


def method_parameters(model: nn.Module, method: Method, info: ModelInfo) -> dict[str, torch.Tensor]:
    return {
        n: p for n, p in model.named_parameters() if p.requires_grad and not method.is_head(n, info)
    }


def loss_of(model: nn.Module, batch: dict[str, torch.Tensor]) -> float:
    with torch.no_grad():
        return model(**batch).loss.item()


def train(method: Method, model: nn.Module, hp: dict[str, Any], batch) -> None:
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=hp["lr"])
    for step in range(1, STEPS + 1):
        model(**batch).loss.backward()
        optimizer.step()
        method.on_step(model, step)
        optimizer.zero_grad()


def check_trains_and_round_trips(name, build, info, batch, tmp_path) -> dict[str, torch.Tensor]:
    """Train, then rebuild the tuned model from a freshly adapted one (other seed, same frozen
    head) and the artifact read back from safetensors."""
    method = METHODS.get(name)
    model, hp = adapt(method, build, info, seed=0)
    before = {n: p.detach().clone() for n, p in method_parameters(model, method, info).items()}
    assert before, f"{name} trains no parameters of its own"
    initial = loss_of(model, batch)
    train(method, model, hp, batch)
    assert loss_of(model, batch) < initial, f"{name}: {STEPS} steps did not lower the loss"
    after = method_parameters(model, method, info)
    assert any(not torch.equal(before[n], after[n]) for n in before), f"{name}: nothing learned"

    tensors = {k: v.detach().contiguous() for k, v in method.artifact(model, info).items()}
    assert not any(method.is_head(k, info) for k in tensors), "the head is the harness's to store"
    save_file(tensors, tmp_path / "artifact.safetensors")
    loaded = load_file(tmp_path / "artifact.safetensors")
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)

    with torch.no_grad():
        expected = model(**batch).logits
    fresh, _ = adapt(method, build, info, seed=1)
    with torch.no_grad():
        head_only = fresh(**batch).logits
    method.load_artifact(fresh, loaded, info)
    with torch.no_grad():
        rebuilt = fresh(**batch).logits
    torch.testing.assert_close(rebuilt, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(head_only, expected), f"{name}: the artifact changes nothing"
    return tensors


@pytest.mark.parametrize("name", OWN_METHODS)
def test_trainable_parameters(name, minilm):
    build, info, _ = minilm
    assert name in EXPECTED, f"add {name}'s closed-form parameter count to EXPECTED"
    method = METHODS.get(name)
    base = build()
    model, _ = adapt(method, lambda: base, info, seed=0)
    trainable = sum(p.numel() for p in method_parameters(model, method, info).values())
    expected, _ = EXPECTED[name]
    if name == "full":
        expected = sum(p.numel() for n, p in base.named_parameters() if not is_head(n, info))
    elif name == "bitfit":
        expected = sum(
            p.numel()
            for n, p in base.named_parameters()
            if n.endswith(".bias") and not is_head(n, info)
        )
    elif name == "freeze":
        expected = sum(p.numel() for p in base.bert.encoder.layer[-1].parameters())
        expected += sum(p.numel() for p in base.bert.pooler.parameters())
    assert trainable == expected


@pytest.mark.parametrize("name", OWN_METHODS)
def test_trains_and_round_trips(name, minilm, tmp_path):
    build, info, batch = minilm
    tensors = check_trains_and_round_trips(name, build, info, batch, tmp_path)
    _, stored = EXPECTED.get(name, (None, None))
    if stored is not None:
        assert sum(t.numel() for t in tensors.values()) == stored


GPT2_REFUSALS = {
    # Input-level prompts: GPT-2 finds its last token from input_ids, which peft replaces.
    "p_tuning": r"gpt2 classifies from the last non-padding token.*inputs_embeds",
    "prompt_tuning": r"gpt2 classifies from the last non-padding token.*inputs_embeds",
}


@pytest.mark.parametrize("name", OWN_METHODS)
def test_gpt2_applies_or_says_why(name, gpt2, tmp_path):
    """On a GPT-2 classifier every method trains and round-trips, except those that refuse it
    for their known reason."""
    build, info, batch = gpt2
    reason = METHODS.get(name).unsupported_reason(info)
    if name in GPT2_REFUSALS:
        assert reason is not None, f"{name} now applies to gpt2: update GPT2_REFUSALS"
        assert re.search(GPT2_REFUSALS[name], reason), reason
        return
    assert reason is None, f"{name} refuses {info.model_type}: {reason}"
    check_trains_and_round_trips(name, build, info, batch, tmp_path)


@pytest.mark.parametrize("name", OWN_METHODS)
def test_causal_lm_applies_or_says_why(name, causal_lm, tmp_path):
    """On a decoder's language-model head every method trains and round-trips, or says why not
    (the prompt methods included: only last-token classifiers refuse them)."""
    build, info, batch = causal_lm
    reason = METHODS.get(name).unsupported_reason(info)
    if reason is not None:
        expected = name == "bitfit" and not info.has_bias
        assert expected, f"{name} refuses {info.model_type}: {reason}"
        return
    check_trains_and_round_trips(name, build, info, batch, tmp_path)


def test_adalora_reallocates_and_stores_only_the_budget(minilm, tmp_path):
    """After the schedule, the average rank is target_r and the artifact holds only that."""
    build, info, batch = minilm
    method = METHODS.get("adalora")
    model, hp = adapt(method, build, info, seed=0)
    train(method, model, hp, batch)
    tensors = method.artifact(model, info)
    ranks = [t.shape[0] for n, t in tensors.items() if ".lora_E" in n]
    assert sum(ranks) == hp["target_r"] * len(ranks)


def test_adalora_adds_orthogonal_regularizer(minilm):
    build, info, batch = minilm
    model, _ = adapt(METHODS.get("adalora"), build, info, seed=0)
    with torch.no_grad():
        with_reg = model(**batch).loss
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    plain = nn.functional.cross_entropy(logits, batch["labels"])
    assert with_reg > plain + 1e-3


def test_prefix_keeps_padding_out(minilm):
    """Our prefix injection leaves padded positions masked: padding does not change logits."""
    build, info, batch = minilm
    model, _ = adapt(METHODS.get("mam"), build, info, seed=0)
    lengths = batch["attention_mask"].sum(dim=1)
    i = int(lengths.argmin())
    assert lengths[i] < batch["attention_mask"].shape[1], "the batch needs padding"
    padded = {k: v[i : i + 1] for k, v in batch.items() if k != "labels"}
    short = {k: v[:, : int(lengths[i])] for k, v in padded.items()}
    with torch.no_grad():
        torch.testing.assert_close(model(**short).logits, model(**padded).logits)


@pytest.mark.parametrize("model_type", sorted(LAYOUTS))
def test_own_modules_on_declared_architectures(model_type):
    """Freeze, Houlsby, Pfeiffer, MAM and UniPELT find their places in every architecture they
    claim (tiny random configs, padded batch) and all their parameters get gradients."""
    from transformers import AutoModelForSequenceClassification

    config = shrunk_config(model_type)
    ids = torch.randint(2, 128, (2, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    for name in ("freeze", "houlsby", "pfeiffer", "mam", "unipelt"):
        method = METHODS.get(name)
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_config(config)
        info = model_info(model_type, model)
        assert method.unsupported_reason(info) is None, f"{name} refuses {model_type}"
        model = method.apply(model, {**method.defaults, "steps": STEPS}, info)
        model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1])).loss.backward()
        missing = [n for n, p in method_parameters(model, method, info).items() if p.grad is None]
        assert not missing, f"{name} on {model_type}: no gradient for {missing}"
