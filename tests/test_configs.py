"""Every shipped sweep config plans: its names, values and budgets are valid before any job."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from peftbench.planning.sweep import plan_sweep

CONFIGS = Path(__file__).resolve().parents[1] / "config"


def overlay(base: dict, extra: dict) -> dict:
    """``extra`` on top of ``base`` the way Snakemake merges config files (nested dicts merge)."""
    merged = dict(base)
    for key, value in extra.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = overlay(merged[key], value) if both else value
    return merged


@pytest.mark.parametrize(
    "name", sorted(p.name for p in CONFIGS.glob("*.yaml") if p.name != "config.schema.yaml")
)
def test_shipped_config_plans_a_valid_sweep(name):
    config = overlay(
        yaml.safe_load((CONFIGS / "config.yaml").read_text()),
        yaml.safe_load((CONFIGS / name).read_text()),
    )
    validate(config, str(CONFIGS / "config.schema.yaml"))  # what the Snakefile checks first
    sweep = plan_sweep(config)
    runs = len(config["models"]) * len(config["tasks"]) * len(config["seeds"])
    assert len(sweep.specs) >= runs * len(config["methods"])  # grids add settings
    assert all(isinstance(seed, int) for seed in config["seeds"])


def test_the_core_comparison_is_the_three_seed_subset_of_all_methods():
    every = yaml.safe_load((CONFIGS / "all-methods.yaml").read_text())
    core = yaml.safe_load((CONFIGS / "all-methods-core.yaml").read_text())
    assert set(core["methods"]) < set(every["methods"]) and core["seeds"] == [0, 1, 2]
    assert core["results_dir"] == every["results_dir"]  # shared runs are not run twice
    for method in core["methods"]:
        assert core["method_hparams"].get(method) == every["method_hparams"].get(method)
        assert core["grid"].get(method) == every["grid"].get(method)
