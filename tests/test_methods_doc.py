"""docs/methods.md is generated from the plugins and must match them."""

from __future__ import annotations

import re

import pytest

from peftbench import METHODS
from peftbench.reporting.methods_doc import render
from tests.conftest import REPO


@pytest.mark.slow
def test_methods_doc_is_up_to_date():
    foreign = [n for n, m in METHODS if not type(m).__module__.startswith("peftbench.methods.")]
    if foreign:
        pytest.skip(f"third-party methods installed: {foreign}")
    assert (REPO / "docs" / "methods.md").read_text() == render(), (
        "regenerate: python -m peftbench.reporting.methods_doc docs/methods.md"
    )


SOURCE = re.compile(r"arXiv:\d{4}\.\d{4,5}\b|https://\S+\.\S+")
"""Where the paper can be found: an arXiv id (``arXiv:2106.09685``) or a web address; a
method without one says so ("none linked from ...")."""


def test_every_method_names_its_paper_and_defaults():
    descriptions = [method.description for _, method in METHODS]
    assert len(set(descriptions)) == len(descriptions), "two methods share a description"
    for name, method in METHODS:
        assert "\n" not in method.description.strip(), (name, "one line: a table cell")
        assert SOURCE.search(method.paper) or method.paper.startswith("none "), (name, method.paper)
        low, high = method.lr_range
        assert 0 < low <= method.defaults["lr"] <= high, (name, method.defaults, method.lr_range)
