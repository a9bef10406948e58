"""`peftbench count`: the standard's counts without weights, from the command line."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli

KEYS = {
    "base_total", "trainable", "trainable_method", "trainable_head", "added", "added_method",
    "added_head", "stored", "stored_bytes", "changed", "inference_added", "update_rank",
}  # fmt: skip


@pytest.mark.slow
def test_count_prints_the_standard_keys_as_json():
    out = run_cli("count", "--model", "roberta-base", "--method", "lora", "--json").stdout
    counts = json.loads(out)
    assert KEYS <= set(counts)
    assert counts["trainable_method"] == 294_912  # Hu et al. 2022, Table 2: "0.3M"
    assert counts["inference_added"] == 0
    assert counts["changed"] is None  # needs training: not claimed without it


def test_count_refuses_unknown_hyperparameters_with_the_valid_ones():
    result = run_cli(
        "count", "--model", "bert-base", "--method", "bitfit", "--set", "r=3", check=False
    )
    assert result.returncode == 2
    assert "unknown hyperparameter 'r'" in result.stderr and "lr" in result.stderr


@pytest.mark.slow
def test_count_unknown_model_lists_models():
    result = run_cli("count", "--model", "bert-huge", "--method", "lora", check=False)
    assert result.returncode == 2 and "llama-3-70b" in result.stderr


@pytest.mark.slow
def test_count_text_output_shows_json_values():
    out = run_cli("count", "--model", "roberta-base", "--method", "lora").stdout
    rows = dict(line.split(None, 1) for line in out.splitlines())
    assert rows["changed"] == "null" and rows["inference_basis"] == "merged"
    assert json.loads(rows["update_rank"]) == {
        "max": 8, "mean": 8.0, "matrices": 24, "method": "declared"
    }  # fmt: skip
