"""Forgetting: the embedded sample is fixed, the cross-entropy matches a manual computation
(prompt methods' virtual positions skipped), and only a changed model forgets."""

from __future__ import annotations

import pytest
import torch

from peftbench.planning.spec import FORGETTING_TEXTS
from peftbench.plugin.registry import METHODS, MODELS, TASKS
from peftbench.plugin.task import Head
from peftbench.run.forgetting import (
    MAX_LENGTH,
    encode,
    fingerprint,
    forgetting_record,
    general_text_sample,
    mean_cross_entropy,
)


@pytest.fixture(scope="module")
def llama():
    source = MODELS.get("tiny-llama")
    loaded = source.load(num_labels=0, head=Head.CAUSAL_LM, dtype="float32")
    return loaded.model, source.tokenizer(), loaded.info


def manual_cross_entropy(model, ids_list: list[list[int]]) -> float:
    """Nats per predicted token, one text at a time, no padding."""
    total, count = 0.0, 0
    for ids in ids_list:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
        log_probs = torch.log_softmax(logits[:-1].double(), -1)
        total -= log_probs.gather(1, torch.tensor(ids[1:])[:, None]).sum().item()
        count += len(ids) - 1
    return total / count


def test_the_sample_is_fixed_long_and_no_task_text():
    texts = general_text_sample()
    assert len(texts) == FORGETTING_TEXTS == len(set(texts)) and texts == general_text_sample()
    assert fingerprint(texts) == fingerprint(list(texts)) != fingerprint(texts[::-1])
    tokenizer = MODELS.get("tiny-llama").tokenizer()
    assert {len(ids) for ids in encode(tokenizer, texts, MAX_LENGTH)} == {MAX_LENGTH}
    used = set()
    for name in ("docstring-module", "docstring-match"):
        for split in TASKS.get(name).load().values():
            used.update(split["text"])
    assert not used & set(texts)
    with pytest.raises(ValueError, match="count=100000"):
        general_text_sample(100_000)


def test_cross_entropy_matches_a_manual_log_softmax(llama):
    model, tokenizer, _ = llama
    # Different lengths: padding inside a batch, and batches of different sizes.
    texts = general_text_sample()[:5]
    lengths = [40, 17, 33, 40, 9]
    cut = zip(encode(tokenizer, texts, 64), lengths, strict=True)
    texts = [tokenizer.decode(ids[:n], skip_special_tokens=True) for ids, n in cut]
    ids_list = encode(tokenizer, texts, 40)
    assert len({len(ids) for ids in ids_list}) > 2
    expected = manual_cross_entropy(model, ids_list)
    for batch_size in (1, 2, 5):
        got = mean_cross_entropy(model, tokenizer, texts, 40, batch_size, "cpu")
        assert got == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="max_length=1"):
        mean_cross_entropy(model, tokenizer, texts, 1)


def test_an_untouched_model_forgets_nothing_and_a_perturbed_one_does(llama):
    model, tokenizer, _ = llama
    texts = general_text_sample()[:8]
    base = mean_cross_entropy(model, tokenizer, texts, 32, 4, "cpu")
    again = mean_cross_entropy(model, tokenizer, texts, 32, 4, "cpu")
    record = forgetting_record(base, again, tokenizer, texts, 32)
    assert record["forgetting"] == 0.0 and record["tokens"] == 8 * 31
    assert record["sample"] == {
        "texts": 8,
        "max_length": 32,
        "source": "Python standard-library module docstrings",
        "fingerprint": fingerprint(texts),
    }
    assert record["unit"] == "nats/token"
    weight = model.model.layers[0].mlp.down_proj.weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.add_(torch.randn_like(weight, generator=torch.Generator().manual_seed(0)))
        tuned = mean_cross_entropy(model, tokenizer, texts, 32, 4, "cpu")
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    perturbed = forgetting_record(base, tuned, tokenizer, texts, 32)
    assert perturbed["forgetting"] == tuned - base != 0.0


def test_prompt_tuning_skips_the_virtual_positions():
    source = MODELS.get("tiny-llama")
    loaded = source.load(num_labels=0, head=Head.CAUSAL_LM, dtype="float32")
    tokenizer, method = source.tokenizer(), METHODS.get("prompt_tuning")
    model = method.apply(loaded.model, {**method.defaults, "num_virtual_tokens": 5}, loaded.info)
    texts = general_text_sample()[:3]
    ids_list = encode(tokenizer, texts, 24)
    total, count = 0.0, 0
    for ids in ids_list:  # the virtual tokens' logits (the first 5) predict nothing
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
        assert logits.shape[0] == len(ids) + 5
        log_probs = torch.log_softmax(logits[5:-1].double(), -1)
        total -= log_probs.gather(1, torch.tensor(ids[1:])[:, None]).sum().item()
        count += len(ids) - 1
    got = mean_cross_entropy(model, tokenizer, texts, 24, 2, "cpu")
    assert got == pytest.approx(total / count, rel=1e-5)
