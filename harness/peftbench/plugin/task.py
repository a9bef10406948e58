"""The interface every task plugin implements."""

from __future__ import annotations

import hashlib
import json
from enum import Enum
from typing import TYPE_CHECKING, Any

from peftbench.plugin.errors import SpecError

if TYPE_CHECKING:
    from datasets import DatasetDict


class Head(str, Enum):
    """How a task is posed to a model: ``classification``, a sequence-classification head on
    the pretrained backbone; ``causal-lm``, the pretrained language-model head scoring each
    class's answer text after a prompt (the class whose answer is likeliest is the prediction).
    Members equal their values, so records and configs hold the plain strings."""

    CLASSIFICATION = "classification"
    CAUSAL_LM = "causal-lm"
    GENERATION = "generation"
    """The pretrained language-model head continues a prompt: trained on the reference
    completion (the loss on its tokens only), evaluated on the text it generates greedily."""

    def __str__(self) -> str:
        return self.value

    @property
    def language_model(self) -> bool:
        """Whether the task is posed to the pretrained language-model head (a causal LM)."""
        return self in (Head.CAUSAL_LM, Head.GENERATION)

    @classmethod
    def of(cls, value: str) -> Head:
        """The head named ``value``; an unknown name raises naming the valid ones."""
        try:
            return cls(value)
        except ValueError:
            valid = ", ".join(h.value for h in cls)
            raise ValueError(f"head {value!r}; valid: {valid}") from None


class TaskDataError(SpecError):
    """A task's data folder or files cannot make the task; the message names the task, the file
    (and line), the bad value and the valid choices. A :class:`SpecError` (the run's
    ``data_dir`` is part of its specification), so the command line reports it in one line."""


class Task:
    """A classification task with a ``train`` and a ``validation`` split.

    :meth:`load` returns a ``DatasetDict`` whose rows have the :attr:`text_fields` columns and an
    integer ``label`` column. Metrics are names of ``evaluate`` modules (peftbench ships local
    copies of the ones it uses, so they work offline).

    With :attr:`head` ``causal-lm`` the task also gives :meth:`prompt` and :attr:`answers`, the
    text a causal language model continues the prompt with for each label; training maximises
    the likelihood of the right answer, evaluation predicts the likeliest.

    With :attr:`head` ``generation`` rows need no ``label``: the task gives :meth:`prompt` (the
    user's message), :meth:`completion` (the reference reply, trained on) and :meth:`reference`
    (what a generation is scored against); evaluation generates at most
    :attr:`max_new_tokens` tokens greedily, cuts the text at the first of :attr:`stop`, applies
    :meth:`extract` and scores the result with :attr:`metrics` (``evaluate`` modules over
    strings, e.g. ``exact_match``).
    """

    name: str = ""
    head: Head = Head.CLASSIFICATION
    answers: tuple[str, ...] = ()
    """``causal-lm`` tasks: one continuation per label, in label order (e.g. ``" yes"``)."""
    description: str = ""
    text_fields: tuple[str, ...] = ("text",)
    labels: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ("accuracy",)
    primary_metric: str = "accuracy"
    source: str = ""
    """Where the data comes from (citation or URL)."""

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def load(self, data_dir: str | None = None) -> DatasetDict:
        raise NotImplementedError

    def train_size(self, data_dir: str | None = None) -> int | None:
        """Rows of the training split (before the dev split is carved out), where they can be
        counted cheaply at plan time; ``None`` (the default) where only loading would tell.
        The sweep refuses a ``batch_size`` larger than what is left for training."""
        return None

    def data_dir_problems(self, folder: str) -> list[str]:
        """What keeps ``folder`` (a ``data_dirs`` value) from holding this task's data, found
        cheaply at plan time (e.g. the folder or a split's file is missing); empty if nothing
        does, or if the task does not say what it reads."""
        return []

    max_new_tokens: int = 32
    """``generation`` tasks: the most tokens a generation may have."""
    stop: tuple[str, ...] = ("\n",)
    """``generation`` tasks: a generation ends at the first of these strings (excluded)."""

    def prompt(self, row: dict[str, Any]) -> str:
        """``causal-lm`` and ``generation`` tasks: the text the answer follows (``generation``:
        the user's message, put in the model's chat template where it has one)."""
        raise NotImplementedError

    def completion(self, row: dict[str, Any]) -> str:
        """``generation`` tasks: the reference reply to :meth:`prompt`, which training fits."""
        raise NotImplementedError

    def reference(self, row: dict[str, Any]) -> str:
        """``generation`` tasks: what an extracted generation must equal; by default the
        answer :meth:`extract` finds in the :meth:`completion`."""
        return self.extract(self.completion(row))

    def extract(self, text: str) -> str:
        """``generation`` tasks: the answer in a generated (or reference) text; by default the
        text without surrounding whitespace. GSM8K-style tasks take the number after ``####``."""
        return text.strip()


def content_fingerprint(data: DatasetDict) -> str:
    """SHA-256 over every split's rows, in order (independent of any cache state)."""
    digest = hashlib.sha256()
    for split in sorted(data):
        digest.update(split.encode())
        for batch in data[split].iter(batch_size=1000):
            digest.update(json.dumps(batch, sort_keys=True, ensure_ascii=False).encode())
    return "sha256:" + digest.hexdigest()
