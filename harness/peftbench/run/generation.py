"""Greedy generation for evaluation and serving cost (definitions: docs/measurement.md).

Prompts are token ids, left-padded into batches (the pad token is the tokenizer's, else its
EOS) with an attention mask, and continued greedily by ``generate``. A generation ends at the
model's EOS, at ``max_new_tokens``, or at the first step whose decoded new text contains one of
the stop strings; its text is cut before that string. Batches hold prompts sorted by length;
for peft's prompt-learning models that feed virtual tokens as input embeddings (prompt tuning,
P-tuning), which ignore position ids, a batch holds prompts of one length only, so that no
padding shifts a prompt's positions. Either way a batched generation equals the one-at-a-time
generation of each prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from peftbench.run.measure import StepTimer, percentile

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

Autocast = Callable[[], AbstractContextManager]


@dataclass
class Generated:
    """Generations in the order of their prompts."""

    texts: list[str]
    """Decoded new text (special tokens skipped), cut before the first stop string."""
    token_ids: list[list[int]]
    """The new tokens, up to and including the one that ended the generation."""
    new_tokens: list[int]
    """``len`` of each :attr:`token_ids`."""
    batch_seconds: list[float]
    """Seconds of each batch's ``generate`` call (:class:`peftbench.run.measure.StepTimer`)."""


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The tokenizer's pad token, else its EOS token."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError(f"{type(tokenizer).__name__} has neither a pad nor an EOS token")
    return pad


def eos_token_ids(model: Any, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The tokens that end a generation: the model's generation config's EOS and the
    tokenizer's."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    return sorted({i for i in [*ids, tokenizer.eos_token_id] if i is not None})


def batches(lengths: Sequence[int], batch_size: int, same_length: bool) -> list[list[int]]:
    """Prompt positions in batches of at most ``batch_size``, by increasing length (prompts of
    one length only per batch with ``same_length``)."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be a positive number of prompts")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for i in order:
        full = groups and len(groups[-1]) == batch_size
        if not groups or full or (same_length and lengths[groups[-1][0]] != lengths[i]):
            groups.append([])
        groups[-1].append(i)
    return groups


@contextmanager
def inference(model: Any) -> Iterator[None]:
    """``model`` in eval mode under ``no_grad``, its train/eval mode restored afterwards."""
    import torch

    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(training)


class _Ends:
    """A stopping criterion for ``generate``: marks each row done at its first EOS token or at
    the first step whose decoded new tokens contain a stop string, and keeps that length."""

    def __init__(self, tokenizer: Any, width: int, stop: tuple[str, ...], eos: list[int]) -> None:
        self.tokenizer, self.width, self.stop, self.eos = tokenizer, width, stop, set(eos)
        self.lengths: list[int | None] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> Any:
        import torch

        new = input_ids[:, self.width :].tolist()
        if not self.lengths:
            self.lengths = [None] * len(new)
        for row, ids in enumerate(new):
            if self.lengths[row] is None and (ids[-1] in self.eos or self._stopped(ids)):
                self.lengths[row] = len(ids)
        return torch.tensor([n is not None for n in self.lengths], device=input_ids.device)

    def _stopped(self, ids: list[int]) -> bool:
        if not self.stop:
            return False
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return any(s in text for s in self.stop)


def cut(text: str, stop: tuple[str, ...]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    at = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[: min(at)] if at else text


def _generation_config(tokenizer: Any, eos: list[int], max_new_tokens: int, exact: bool) -> Any:
    from transformers import GenerationConfig

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}: must be at least 1")
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens if exact else None,
        do_sample=False,
        num_beams=1,
        pad_token_id=pad_token_id(tokenizer),
        eos_token_id=eos or None,
        use_cache=True,
    )


def _left_padded(prompts: list[list[int]], pad: int, device: str) -> tuple[Any, Any]:
    import torch

    if any(not p for p in prompts):
        raise ValueError("an empty prompt: generation needs at least one prompt token")
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    return ids.to(device), mask.to(device)


def generate(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    max_new_tokens: int,
    stop: tuple[str, ...],
    batch_size: int,
    device: str,
    autocast: Autocast = nullcontext,
    same_length: bool = False,
) -> Generated:
    """Greedy generations of ``prompts`` (token ids, no padding), ``batch_size`` at a time
    (prompts of one length only per batch with ``same_length``: for a method whose virtual
    tokens ignore position ids, :attr:`peftbench.plugin.method.Method.equal_length_batches`). Each
    batch's ``generate`` call is timed; building and copying its inputs and decoding the
    outputs are not."""
    eos = eos_token_ids(model, tokenizer)
    config = _generation_config(tokenizer, eos, max_new_tokens, exact=False)
    ids_of: list[list[int]] = [[] for _ in prompts]
    timer = StepTimer(device)
    groups = batches([len(p) for p in prompts], batch_size, same_length)
    with inference(model), autocast():
        for group in groups:
            ids, mask = _left_padded([prompts[i] for i in group], config.pad_token_id, device)
            ends = _Ends(tokenizer, ids.shape[1], stop, eos)
            timer.start()
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                generation_config=config,
                stopping_criteria=[ends],
            )
            timer.stop()
            new = out[:, ids.shape[1] :].tolist()
            for row, i in enumerate(group):
                ids_of[i] = new[row][: ends.lengths[row] or len(new[row])]
    texts = [cut(tokenizer.decode(ids, skip_special_tokens=True), stop) for ids in ids_of]
    return Generated(texts, ids_of, [len(ids) for ids in ids_of], timer.seconds())


SERVING_PROMPTS = 4
"""Validation prompts the serving cost is measured on (the first ones)."""
SERVING_NEW_TOKENS = 16
"""Tokens generated per prompt when measuring serving cost."""


def serving_prompts(prompts: Sequence[list[int]], count: int = SERVING_PROMPTS) -> list[list[int]]:
    """The first ``count`` prompts: the same ones for the unmerged and the merged model."""
    if count < 1 or len(prompts) < count:
        raise ValueError(f"count={count}: need 1 to {len(prompts)} prompts")
    return [list(p) for p in prompts[:count]]


def serving_latency(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    new_tokens: int = SERVING_NEW_TOKENS,
    device: str = "cpu",
    autocast: Autocast = nullcontext,
) -> dict[str, Any]:
    """Serving cost at batch size 1: each prompt generates exactly ``new_tokens`` tokens
    greedily (EOS suppressed until then, no stop strings), once with one new token (time to
    first token: the prompt's forward and one token) and once with all of them. One untimed
    generation of the first prompt warms up first. Medians over prompts."""
    if new_tokens < 2:
        raise ValueError(f"new_tokens={new_tokens}: must be at least 2 (first token, then decode)")
    eos = eos_token_ids(model, tokenizer)
    first_config = _generation_config(tokenizer, eos, 1, exact=True)
    full_config = _generation_config(tokenizer, eos, new_tokens, exact=True)
    first, full = StepTimer(device), StepTimer(device)
    with inference(model), autocast():
        inputs = [_left_padded([p], full_config.pad_token_id, device) for p in prompts]
        model.generate(
            input_ids=inputs[0][0], attention_mask=inputs[0][1], generation_config=full_config
        )
        for ids, mask in inputs:
            for timer, config in ((first, first_config), (full, full_config)):
                timer.start()
                out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
                timer.stop()
                made = out.shape[1] - ids.shape[1]
                if made != config.max_new_tokens:
                    raise RuntimeError(f"generated {made} tokens, not {config.max_new_tokens}")
    ttft, total = first.seconds(), full.seconds()
    decode = [(t - f) / (new_tokens - 1) for f, t in zip(ttft, total, strict=True)]
    return {
        "s_per_token": percentile([t / new_tokens for t in total], 0.5),
        "decode_s_per_token": percentile(decode, 0.5),
        "time_to_first_token_s": percentile(ttft, 0.5),
        "tokens_per_s": len(total) * new_tokens / sum(total),
    }


def serving_record(
    unmerged: dict[str, Any], merged: dict[str, Any] | None, prompts: int, new_tokens: int
) -> dict[str, Any]:
    """``record["serving"]``: the cost of the model as trained (``unmerged``) and after the
    method's merge (``merged``; ``None`` where the method does not merge)."""
    return {
        "unmerged": unmerged,
        "merged": merged,
        "prompts": prompts,
        "new_tokens": new_tokens,
        "batch_size": 1,
        "unit": "seconds per token; time to first token in seconds; tokens per second",
    }
