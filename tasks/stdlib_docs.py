"""Embedded tasks built from the documentation strings of Python's standard library.

The text is real English technical prose that is on every machine with Python: no download.
The source files are parsed with :mod:`ast` (nothing is imported or executed), walked in sorted
order, and split by a hash of each example, so the same Python version always yields the same
data; the content fingerprint recorded with every result tells versions apart.

* ``docstring-module``: which of ten standard-library packages does this docstring come from?
  (single text, 10 classes, balanced).
* ``docstring-match``: does this docstring document the function with this name? Positives pair
  a function with its own docstring, negatives with the docstring of another function
  (text pair, 2 classes, balanced).
* ``docstring-module-lm`` and ``docstring-match-lm``: the same data posed to a causal language
  model: a prompt, and one answer per class (the package's name; " no" / " yes") whose
  likelihood the model scores.
"""

from __future__ import annotations

import ast
import hashlib
import sysconfig
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from peftbench import register_task
from peftbench.plugin.task import Head, Task

MODULE_CLASSES: dict[str, tuple[str, ...]] = {
    "asyncio": ("asyncio",),
    "decimal": ("_pydecimal",),
    "email": ("email",),
    "http": ("http", "urllib"),
    "importlib": ("importlib",),
    "logging": ("logging",),
    "mailbox": ("mailbox",),
    "multiprocessing": ("multiprocessing",),
    "unittest": ("unittest",),
    "xml": ("xml",),
}
PER_CLASS = 170
VALIDATION_SHARE = 0.25
MAX_CHARS = 400


def _bucket(key: str) -> float:
    """A deterministic number in [0, 1) for ``key``."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def _first_paragraph(doc: str) -> str:
    return " ".join(doc.strip().split("\n\n")[0].split())[:MAX_CHARS]


@cache
def documented_definitions() -> tuple[tuple[str, str, str], ...]:
    """``(top-level package, qualified name, first docstring paragraph)`` for every documented
    function and class of the standard library's pure-Python sources, in sorted file order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in ("site-packages", "dist-packages") or {"test", "tests"} & set(rel.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        module = ".".join(rel.with_suffix("").parts)
        for qualname, doc in _walk(tree, module):
            text = _first_paragraph(doc)
            if len(text) >= 20:
                found.append((rel.parts[0].removesuffix(".py"), qualname, text))
    return tuple(found)


def _walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, str]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}.{child.name}"
            doc = ast.get_docstring(child)
            if doc:
                yield name, doc
            if isinstance(child, ast.ClassDef):
                yield from _walk(child, name)


def _split(rows: list[dict], key: str):
    from datasets import Dataset, DatasetDict

    train = [r for r in rows if _bucket(key + r["id"]) >= VALIDATION_SHARE]
    validation = [r for r in rows if _bucket(key + r["id"]) < VALIDATION_SHARE]
    return DatasetDict(
        train=Dataset.from_list(train), validation=Dataset.from_list(validation)
    ).remove_columns("id")


@register_task("docstring-module")
class DocstringModule(Task):
    description = "Which of 10 stdlib packages a docstring comes from (embedded, 10 classes)"
    text_fields = ("text",)
    labels = tuple(MODULE_CLASSES)
    source = f"docstrings of the Python {sysconfig.get_python_version()} standard library"

    def load(self, data_dir: str | None = None):
        owner = {pkg: label for label, pkgs in MODULE_CLASSES.items() for pkg in pkgs}
        by_text: dict[str, set[str]] = {}
        for package, _, text in documented_definitions():
            if package in owner:
                by_text.setdefault(text, set()).add(owner[package])
        # A text found under two labels (a copied docstring) would be noise: drop it.
        unique = {text: labels.pop() for text, labels in by_text.items() if len(labels) == 1}
        rows = []
        for index, label in enumerate(self.labels):
            texts = sorted((t for t, lab in unique.items() if lab == label), key=_bucket)
            rows += [{"id": t, "text": t, "label": index} for t in texts[:PER_CLASS]]
        return _split(rows, "docstring-module")  # the -lm variant: the same split


@register_task("docstring-match")
class DocstringMatch(Task):
    description = "Does a docstring document the named function? (embedded, text pair, 2 classes)"
    text_fields = ("name", "text")
    labels = ("mismatch", "match")
    source = f"docstrings of the Python {sysconfig.get_python_version()} standard library"
    size = 3200

    def load(self, data_dir: str | None = None):
        definitions = [
            d for d in documented_definitions() if not d[1].split(".")[-1].startswith("_")
        ]
        counts: dict[str, int] = {}
        for _, _, text in definitions:
            counts[text] = counts.get(text, 0) + 1
        # Keep definitions whose docstring is theirs alone, so a negative is never a true match.
        chosen = sorted((d for d in definitions if counts[d[2]] == 1), key=lambda d: _bucket(d[1]))[
            : self.size
        ]
        rows = []
        for i, (_, qualname, text) in enumerate(chosen):
            name = ".".join(qualname.split(".")[-2:])
            if i % 2:
                other = chosen[(i + len(chosen) // 2) % len(chosen)][2]
                rows.append({"id": qualname, "name": name, "text": other, "label": 0})
            else:
                rows.append({"id": qualname, "name": name, "text": text, "label": 1})
        return _split(rows, "docstring-match")


@register_task("docstring-module-lm")
class DocstringModuleLM(DocstringModule):
    description = "docstring-module for causal LMs: the package name scored after a prompt"
    head = Head.CAUSAL_LM
    answers = tuple(f" {label}" for label in MODULE_CLASSES)

    def prompt(self, row):
        return f"Docstring: {row['text']}\nStandard-library package:"


@register_task("docstring-match-lm")
class DocstringMatchLM(DocstringMatch):
    description = "docstring-match for causal LMs: ' yes' or ' no' scored after a prompt"
    head = Head.CAUSAL_LM
    answers = (" no", " yes")

    def prompt(self, row):
        return f"Docstring: {row['text']}\nFunction: {row['name']}\nDocuments it:"
