"""The interface every task plugin implements."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datasets import DatasetDict


class Task:
    """A sequence-classification task with a ``train`` and a ``validation`` split.

    :meth:`load` returns a ``DatasetDict`` whose rows have the :attr:`text_fields` columns and an
    integer ``label`` column. Metrics are names of ``evaluate`` modules (peftbench ships local
    copies of the ones it uses, so they work offline).
    """

    name: str = ""
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


def content_fingerprint(data: DatasetDict) -> str:
    """SHA-256 over every split's rows, in order (independent of any cache state)."""
    digest = hashlib.sha256()
    for split in sorted(data):
        digest.update(split.encode())
        for batch in data[split].iter(batch_size=1000):
            digest.update(json.dumps(batch, sort_keys=True, ensure_ascii=False).encode())
    return "sha256:" + digest.hexdigest()
