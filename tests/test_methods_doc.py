"""docs/methods.md is generated from the plugins and must match them."""

from __future__ import annotations

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


def test_every_method_names_its_paper_and_defaults():
    for name, method in METHODS:
        assert method.description and method.paper, name
        assert "lr" in method.defaults, name
        low, high = method.lr_range
        assert 0 < low <= high, name
