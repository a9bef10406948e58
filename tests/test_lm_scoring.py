"""Causal-LM classification: prompts tokenized with their answers, and answers scored by their
log-likelihood, checked against a one-sequence-at-a-time computation."""

from __future__ import annotations

import pytest
import torch

from peftbench.plugin.registry import TASKS
from peftbench.run.data import tokenize_task
from peftbench.run.lm_scoring import answer_log_likelihoods


@pytest.fixture(scope="module")
def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=64, vocab_size=50)
    return GPT2LMHeadModel(config).eval()


def reference(model, prompt: list[int], answer: list[int]) -> float:
    """log P(answer | prompt), one token at a time, no padding."""
    total = 0.0
    for i, token in enumerate(answer):
        ids = torch.tensor([prompt + answer[:i]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -1]
        total += torch.log_softmax(logits, -1)[token].item()
    return total


def test_answer_log_likelihoods_match_a_token_by_token_computation(tiny_gpt2):
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    answers = [[20], [21, 22, 23], [24, 25]]  # different lengths: padding inside a chunk
    width = 8
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, prompt in enumerate(prompts):  # the gold answer follows; the scorer ignores it
        ids[row, : len(prompt) + 1] = torch.tensor(prompt + [20])
    batch = {"input_ids": ids, "prompt_length": torch.tensor([len(p) for p in prompts])}
    with torch.no_grad():
        for chunk in (1, 4, 64):
            scores = answer_log_likelihoods(tiny_gpt2, batch, answers, chunk)
            assert scores.shape == (3, 3)
            for row, prompt in enumerate(prompts):
                for col, answer in enumerate(answers):
                    expected = reference(tiny_gpt2, prompt, answer)
                    assert scores[row, col].item() == pytest.approx(expected, abs=1e-4)


def test_prompted_tasks_keep_the_question_and_the_answer_within_max_length():
    task = TASKS.get("docstring-match-lm")
    data, meta = tokenize_task("docstring-match-lm", "tiny-gpt2", 24)
    assert meta["head"] == "causal-lm" and set(data) == {"train", "dev", "validation"}
    answers = meta["answer_ids"]
    assert len(answers) == len(task.answers) == 2
    for row in data["validation"].select(range(50)):
        ids, labels, length = row["input_ids"], row["labels"], row["prompt_length"]
        assert len(ids) <= 24 and ids[0] == 101  # the tokenizer's start token ([CLS])
        assert ids[length:] == answers[row["class_label"]]
        assert labels == [-100] * length + answers[row["class_label"]]
    cue = data["validation"][0]["input_ids"][: data["validation"][0]["prompt_length"]]
    from peftbench.plugin.registry import MODELS

    assert MODELS.get("tiny-gpt2").tokenizer().decode(cue).endswith("documents it :")


def test_lm_variant_has_the_same_examples_as_the_classification_task():
    plain = TASKS.get("docstring-match").load()
    prompted = TASKS.get("docstring-match-lm").load()
    assert plain["validation"]["text"] == prompted["validation"]["text"]
