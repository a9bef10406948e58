"""Forgetting: how much worse the tuned model predicts general text than its base model
(definitions: docs/measurement.md).

The general text is embedded: the module docstrings of Python's standard library (no task uses
them; the stdlib tasks use function and class docstrings), read with :mod:`tokenize` (nothing
is imported or executed), whitespace-normalised, at least :data:`MIN_CHARS` long, ordered by a
hash of the module's name, the first :data:`~peftbench.planning.spec.FORGETTING_TEXTS` kept (a
run's ``forgetting_texts`` measures on the first N of those). The same Python version always
gives the same sample; its fingerprint is recorded. Each text is cut to the same number of
tokens.
"""

from __future__ import annotations

import ast
import hashlib
import sysconfig
import tokenize
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftbench.planning.spec import FORGETTING_TEXTS
from peftbench.run.generation import inference

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

MIN_CHARS = 600
"""Long enough that every text fills :data:`MAX_LENGTH` tokens of a subword tokenizer."""
MAX_LENGTH = 128
"""Tokens per text (the tokenizer's special tokens included)."""


def general_text_sample(count: int = FORGETTING_TEXTS) -> list[str]:
    """The held-out general-text sample: ``count`` standard-library module docstrings."""
    texts = _module_docstrings()
    if len(texts) < count:
        raise ValueError(f"count={count}: the standard library has {len(texts)} such docstrings")
    return list(texts[:count])


@cache
def _module_docstrings() -> tuple[str, ...]:
    """Every long enough module docstring, once each, ordered by a hash of the module's name."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in ("site-packages", "dist-packages") or {"test", "tests"} & set(rel.parts):
            continue
        doc = module_docstring(path)
        text = " ".join((doc or "").split())
        if len(text) >= MIN_CHARS and text not in found.values():
            found[".".join(rel.with_suffix("").parts)] = text
    order = sorted(found, key=lambda name: hashlib.sha256(name.encode()).hexdigest())
    return tuple(found[name] for name in order)


def module_docstring(path: Path) -> str | None:
    """The docstring of the module at ``path``: its first statement if that is a string literal,
    read with :mod:`tokenize` and :func:`ast.literal_eval` (the rest of the file is not
    parsed)."""
    skip = {tokenize.ENCODING, tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE}
    try:
        with path.open("rb") as source:
            for token in tokenize.tokenize(source.readline):
                if token.type not in skip:
                    break
            else:
                return None
    except (tokenize.TokenError, SyntaxError, UnicodeDecodeError, OSError):
        return None
    if token.type != tokenize.STRING:
        return None
    value = ast.literal_eval(token.string)
    return value if isinstance(value, str) else None


def fingerprint(texts: list[str]) -> str:
    """SHA-256 over the texts, in order."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(hashlib.sha256(text.encode()).digest())
    return digest.hexdigest()


def encode(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int
) -> list[list[int]]:
    """Each text's token ids (with the tokenizer's special tokens), cut to ``max_length``."""
    if max_length < 2:
        raise ValueError(f"max_length={max_length}: a text needs 2 tokens to predict one")
    return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]


def predicted_tokens(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> int:
    """Tokens the cross-entropy averages over: every token of each text but its first."""
    return sum(len(ids) - 1 for ids in encode(tokenizer, texts, max_length))


def mean_cross_entropy(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    max_length: int = MAX_LENGTH,
    batch_size: int = 16,
    device: str = "cpu",
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> float:
    """Mean next-token cross-entropy of ``model`` over ``texts``, in nats per token, weighted by
    tokens (every token of a text but its first is predicted from those before it). Positions a
    prompt method prepends (virtual tokens) are skipped."""
    import torch
    import torch.nn.functional as F

    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be a positive number of texts")
    sequences = encode(tokenizer, texts, max_length)
    total, count = 0.0, 0
    with inference(model), autocast():
        for start in range(0, len(sequences), batch_size):
            part = sequences[start : start + batch_size]
            width = max(len(ids) for ids in part)
            ids = torch.zeros(len(part), width, dtype=torch.long)
            mask = torch.zeros(len(part), width, dtype=torch.long)
            labels = torch.full((len(part), width), -100, dtype=torch.long)
            for row, tokens in enumerate(part):
                ids[row, : len(tokens)] = labels[row, : len(tokens)] = torch.tensor(tokens)
                mask[row, : len(tokens)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            offset = logits.shape[1] - width
            # The token at position t is predicted by the logits at t - 1.
            predicting = logits[:, offset : offset + width - 1].float()
            target = labels[:, 1:].to(predicting.device)
            loss = F.cross_entropy(predicting.transpose(1, 2), target, reduction="sum")
            total += float(loss)
            count += int((target != -100).sum())
    return total / count


def forgetting_record(
    base_ce: float,
    tuned_ce: float,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    max_length: int = MAX_LENGTH,
) -> dict[str, Any]:
    """``record["forgetting"]``: both cross-entropies and their difference, tuned − base
    (positive: the tuning made general text less likely)."""
    return {
        "base_ce": base_ce,
        "tuned_ce": tuned_ce,
        "forgetting": tuned_ce - base_ce,
        "tokens": predicted_tokens(tokenizer, texts, max_length),
        "sample": {
            "texts": len(texts),
            "max_length": max_length,
            "source": "Python standard-library module docstrings",
            "fingerprint": fingerprint(texts),
        },
        "unit": "nats/token",
    }
