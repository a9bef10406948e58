"""Classification by a causal language model: each class's answer text is scored by its
log-likelihood after the prompt, and the likeliest class is the prediction (the multiple-choice
scoring of lm-evaluation-harness, summed over the answer's tokens, not length-normalised)."""

from __future__ import annotations

from typing import Any

import torch


def candidates(batch: dict[str, Any], answers: list[list[int]]) -> list[tuple[list[int], int]]:
    """``(prompt + answer tokens, prompt length)`` for every example × answer, example-major."""
    found = []
    for ids, length in zip(batch["input_ids"], batch["prompt_length"], strict=True):
        prompt = ids[: int(length)].tolist()
        found += [(prompt + answer, len(prompt)) for answer in answers]
    return found


def answer_log_likelihoods(
    model: torch.nn.Module, batch: dict[str, Any], answers: list[list[int]], chunk: int
) -> torch.Tensor:
    """``[examples, answers]``: log P(answer | prompt) summed over the answer's tokens. The
    candidates run through the model ``chunk`` sequences at a time, right-padded; positions a
    prompt method prepends (virtual tokens) are skipped."""
    device = next(model.parameters()).device
    sequences = candidates(batch, answers)
    scores = []
    for start in range(0, len(sequences), chunk):
        part = sequences[start : start + chunk]
        width = max(len(ids) for ids, _ in part)
        ids = torch.zeros(len(part), width, dtype=torch.long)
        mask = torch.zeros(len(part), width, dtype=torch.long)
        for row, (tokens, _) in enumerate(part):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        offset = logits.shape[1] - width
        for row, (tokens, prompt_length) in enumerate(part):
            answer = torch.tensor(tokens[prompt_length:], device=logits.device)
            # The token at position t is predicted by the logits at t - 1.
            at = offset + prompt_length - 1 + torch.arange(len(answer), device=logits.device)
            log_probs = torch.log_softmax(logits[row, at].float(), dim=-1)
            scores.append(log_probs.gather(1, answer[:, None]).sum())
    return torch.stack(scores).view(-1, len(answers)).cpu()
