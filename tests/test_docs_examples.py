"""docs/parameters.md's worked examples, checked: every row of the examples' table against
``count_model_method`` (meta device) and its closed form, and every count, percentage, size
and formula of the examples' prose against that table, so that the doc cannot drift."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from peftbench.planning.counting import count_model_method

DOC = Path(__file__).resolve().parents[1] / "docs" / "parameters.md"
TABLE_HEADER = "| model | method | settings | key | value | closed form |"
COUNT = re.compile(r"\d{1,3}(?:,\d{3})+(?!\d)")  # written with thousands separators
PERCENT = re.compile(r"\d+(?:\.\d+)?%")
MEGABYTES = re.compile(r"\d+(?:\.\d+)? MB")
ARITHMETIC = re.compile(r"\d\s*[×·]\s*[\d(]")  # a product of numbers: a formula
DIFFERENCE = " − "


class Example(NamedTuple):
    model: str
    method: str
    settings: str
    key: str
    value: str
    closed_form: str

    @property
    def id(self) -> str:
        return f"{self.model}-{self.method}-{self.key}={self.value}"


def sections() -> tuple[str, list[Example]]:
    """The worked examples' prose (whitespace normalised) and their table's rows."""
    text = DOC.read_text()
    examples = text[text.index("## Worked examples") : text.index("## Using the counts")]
    prose, table = examples.split(TABLE_HEADER)
    rows = []
    for line in table.strip().splitlines()[1:]:  # below the header's separator line
        cells = [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        rows.append(Example(*cells))
    return " ".join(prose.split()), rows


PROSE, EXAMPLES = sections()


@cache
def counts(model: str, method: str, settings: str) -> dict[str, Any]:
    overrides = dict(setting.split("=", 1) for setting in settings.split())
    return count_model_method(model, method, overrides)


def lookup(values: dict[str, Any], key: str) -> int | float:
    """A count by the table's key: ``a``, ``a.field`` or ``a − b``."""
    if DIFFERENCE in key:
        first, second = key.split(DIFFERENCE)
        return lookup(values, first) - lookup(values, second)
    value: Any = values
    for part in key.split("."):
        value = value[part]
    return value


def evaluate(closed_form: str) -> int:
    """The integer value of a formula written with ×, ·, +, parentheses and 1,234 numbers."""
    python = re.sub(r"(?<=\d),(?=\d{3})", "", closed_form.replace("×", "*").replace("·", "*"))
    if not re.fullmatch(r"[\d\s+*()]+", python):
        raise ValueError(f"closed form {closed_form!r} has characters other than ×·+() and digits")
    return eval(python, {"__builtins__": {}})  # digits and operators only (checked above)


def test_the_table_covers_every_example():
    assert {(e.model, e.method) for e in EXAMPLES} == {
        ("bert-base", "full"), ("bert-large", "bitfit"), ("roberta-base", "houlsby"),
        ("roberta-base", "prompt_tuning"), ("gpt2-medium", "prefix_tuning"),
        ("gpt2-medium", "p_tuning_v2"), ("roberta-base", "lora"), ("roberta-large", "lora"),
        ("llama-2-7b", "qlora"),
    }  # fmt: skip


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.id)
def test_table_row_is_what_count_model_method_counts(example):
    actual = lookup(counts(example.model, example.method, example.settings), example.key)
    if example.value.endswith("%"):
        assert example.key.endswith("_pct"), example
        shown = example.value.removesuffix("%")
        decimals = len(shown.partition(".")[2])
        assert f"{actual:.{decimals}f}" == shown
    elif example.value.endswith(" MB"):
        assert example.key.endswith("_bytes"), example
        shown = example.value.removesuffix(" MB")
        assert f"{actual / 1e6:.{len(shown.partition('.')[2])}f}" == shown
    else:
        assert actual == int(example.value.replace(",", ""))
    if example.closed_form:
        assert evaluate(example.closed_form) == actual


def test_every_number_and_formula_of_the_prose_is_in_the_table():
    prose = PROSE
    # Longest first: "2·768 + 2" must be found on its own, not inside "768·768 + ... + 2·768 + 2".
    for form in sorted({e.closed_form for e in EXAMPLES if e.closed_form}, key=len, reverse=True):
        assert form in prose, f"closed form {form!r} of the table is not in the examples"
        prose = prose.replace(form, " ")
    assert not ARITHMETIC.findall(prose), "formulas of numbers that the table does not list"
    values = {e.value for e in EXAMPLES}
    for pattern in (COUNT, PERCENT, MEGABYTES):
        missing = [number for number in pattern.findall(prose) if number not in values]
        assert not missing, f"numbers of the examples that the table does not list: {missing}"
