"""Every shipped sweep config plans: its names, values and budgets are valid before any job."""

from __future__ import annotations

import itertools
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
    grids = config.get("grid") or {}
    planned = [
        (s.model, s.method, s.task, s.seed, grid_point(s.hparams, grids.get(s.method)))
        for s in sweep.specs
    ]
    assert sorted(planned) == sorted(expected_runs(config))  # each run once, every grid point
    assert len({s.run_id for s in sweep.specs}) == len(sweep.specs)
    for spec in sweep.specs:  # budget, then hparams, then method_hparams; grid axes checked above
        asked = {
            **config["budget"],
            **(config.get("hparams") or {}),
            **((config.get("method_hparams") or {}).get(spec.method) or {}),
        }
        asked = {k: v for k, v in asked.items() if k not in (grids.get(spec.method) or {})}
        assert {k: spec.hparams[k] for k in asked} == asked, spec.run_id


def grid_point(hparams: dict, axes: dict | None) -> tuple:
    """A run's values of its method's grid axes."""
    return tuple((name, hparams[name]) for name in sorted(axes or {}))


def expected_runs(config: dict) -> list[tuple]:
    """Every model × method × task × seed, once per combination of its method's grid values."""
    runs = []
    for model, method, task, seed in itertools.product(
        config["models"], config["methods"], config["tasks"], config["seeds"]
    ):
        axes = (config.get("grid") or {}).get(method) or {}
        names = sorted(axes)
        for values in itertools.product(*(axes[name] for name in names)):
            runs.append((model, method, task, seed, tuple(zip(names, values, strict=True))))
    return runs


def test_the_core_comparison_is_the_three_seed_subset_of_all_methods():
    every = yaml.safe_load((CONFIGS / "all-methods.yaml").read_text())
    core = yaml.safe_load((CONFIGS / "all-methods-core.yaml").read_text())
    assert set(core["methods"]) < set(every["methods"]) and core["seeds"] == [0, 1, 2]
    assert core["results_dir"] == every["results_dir"]  # shared runs are not run twice
    for method in core["methods"]:
        assert core["method_hparams"].get(method) == every["method_hparams"].get(method)
        assert core["grid"].get(method) == every["grid"].get(method)
