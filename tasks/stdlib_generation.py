"""An embedded generation task from the standard library's docstrings: no download.

``docstring-name``: given the first paragraph of a documented function's or class's docstring
and the module or class it is defined in, generate its name (unqualified, e.g. ``geometric_mean``
for "Convert data to floats and compute the geometric mean." in ``statistics``). Names are
learnable from the words of the docstring and the library's conventions, but only about one in
eight appears in its docstring; the most frequent name (the trivial baseline) is about 1% of the
rows. Private names (a leading ``_``), docstrings shared by several definitions and names
defined twice in a module are left out. Rows are chosen and split by a hash of the qualified
name, so a Python version always yields the same data.
"""

from __future__ import annotations

import sysconfig
from collections import Counter
from typing import Any

from peftbench import register_task
from peftbench.plugin.task import Head, Task
from peftbench.tasks.stdlib_docs import _bucket, documented_definitions

SIZE = 2000
"""Rows drawn (of about 5,500 eligible on Python 3.11): about 300 are validation rows, which
generation scores one at a time."""
VALIDATION_SHARE = 0.15
KEY = "docstring-name"
"""Salts the hashes that choose and split the rows."""


@register_task(KEY)
class DocstringName(Task):
    description = "Generate the name a stdlib docstring documents (embedded, generation)"
    head = Head.GENERATION
    metrics = ("exact_match", "rouge_l")
    """``rouge_l`` splits names at ``_``: partial credit for ``get_event_loop`` vs ``get_loop``
    (token F1's SQuAD normalisation deletes the ``_``, leaving one token)."""
    primary_metric = "exact_match"
    source = f"docstrings of the Python {sysconfig.get_python_version()} standard library"
    max_new_tokens = 16
    stop = ("\n",)

    def load(self, data_dir: str | None = None):
        from datasets import Dataset, DatasetDict

        definitions = [
            d for d in documented_definitions() if not d[1].rsplit(".", 1)[-1].startswith("_")
        ]
        texts = Counter(text for _, _, text in definitions)
        names = Counter(qualname for _, qualname, _ in definitions)
        chosen = sorted(
            (d for d in definitions if names[d[1]] == texts[d[2]] == 1),
            key=lambda d: _bucket(KEY + d[1]),
        )[:SIZE]
        splits: dict[str, list[dict[str, str]]] = {"train": [], "validation": []}
        for _, qualname, text in chosen:
            scope, name = qualname.replace(".__init__", "").rsplit(".", 1)
            held = _bucket(KEY + "/split/" + qualname) < VALIDATION_SHARE
            row = {"scope": scope, "text": text, "name": name}
            splits["validation" if held else "train"].append(row)
        return DatasetDict({split: Dataset.from_list(rows) for split, rows in splits.items()})

    def prompt(self, row: dict[str, Any]) -> str:
        return (
            f"Name the Python function or class defined in {row['scope']} that this docstring "
            f"documents.\n\n{row['text']}"
        )

    def completion(self, row: dict[str, Any]) -> str:
        return row["name"]

    def extract(self, text: str) -> str:
        """The text without whitespace (a name has none; WordPiece tokenizers decode
        ``get_loop`` as ``get _ loop``)."""
        return "".join(text.split())
