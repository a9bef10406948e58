"""Sweep planning: a config's models × methods × tasks × seeds as validated run specs, and the
per-job values the Snakemake rules need. Every spec is resolved here, so a bad name or value
stops the workflow before any job starts, naming the value and the valid choices."""

from __future__ import annotations

import itertools
import shlex
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from peftbench.codehash import code_hash, harness_hash, hash_files, plugin_files, reporting_hash
from peftbench.registry import MODELS, TASKS, UnknownNameError
from peftbench.spec import RunSpec, SpecError, resolve_spec


class SweepError(ValueError):
    """The config describes runs that cannot exist; every problem is listed."""


@dataclass
class Sweep:
    config: dict[str, Any]
    specs: list[RunSpec] = field(default_factory=list)

    def overrides(self, method: str) -> dict[str, Any]:
        return {
            **self.config["budget"],
            **(self.config.get("hparams") or {}),
            **((self.config.get("method_hparams") or {}).get(method) or {}),
        }

    def set_args(self, model: str, method: str, task: str, seed: int) -> str:
        return " ".join(
            f"--set {shlex.quote(f'{k}={v}')}" for k, v in sorted(self.overrides(method).items())
        )

    def data_dir(self, task: str) -> str | None:
        return (self.config.get("data_dirs") or {}).get(task)

    def data_dir_args(self, task: str) -> str:
        folder = self.data_dir(task)
        return f"--data-dir {shlex.quote(folder)}" if folder else ""

    @cached_property
    def model_for_tokenizer(self) -> dict[str, str]:
        """One model name per tokenizer key (any model with that tokenizer can tokenize)."""
        found: dict[str, str] = {}
        for model in self.config["models"]:
            found.setdefault(MODELS.get(model).tokenizer_key, model)
        return found

    def code_hash(self, model: str, method: str, task: str) -> str:
        return code_hash(model, method, task)

    def tokenize_hash(self, task: str, tokenizer: str) -> str:
        model = self.model_for_tokenizer[tokenizer]
        files = plugin_files(TASKS.get(task)) | plugin_files(MODELS.get(model))
        return f"{harness_hash()}-{hash_files(sorted(files))}"

    def reporting_hash(self) -> str:
        return reporting_hash()

    def mem_mb(self, model: str, method: str) -> int:
        return int(self.config.get("mem_mb_per_run", 4000))

    def runtime_min(self, model: str, method: str) -> int:
        return int(self.config.get("runtime_min_per_run", 60))


def plan_sweep(config: dict[str, Any]) -> Sweep:
    """Resolve every run of ``config``; raise :class:`SweepError` listing all bad values."""
    sweep = Sweep(config)
    problems: list[str] = []
    for model, method, task, seed in itertools.product(
        config["models"], config["methods"], config["tasks"], config["seeds"]
    ):
        try:
            sweep.specs.append(
                resolve_spec(
                    model, method, task, seed, sweep.overrides(method), sweep.data_dir(task)
                )
            )
        except (UnknownNameError, SpecError) as error:
            if str(error) not in problems:
                problems.append(str(error))
    unknown_dirs = set(config.get("data_dirs") or {}) - set(TASKS.names())
    problems += [
        f"data_dirs: unknown task {t!r}; valid tasks: {', '.join(TASKS.names())}"
        for t in sorted(unknown_dirs)
    ]
    if problems:
        raise SweepError("invalid sweep configuration:\n  " + "\n  ".join(problems))
    return sweep
