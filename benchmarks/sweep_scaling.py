"""Snakemake planning time (`snakemake -n`) for sweeps of 100, 1,000 and 10,000 runs, and the
no-op rerun time of a completed sweep. Prints one line per figure; targets: 10,000 runs planned
in under 60 s, a no-op rerun of the default sweep under 10 s.

    python benchmarks/sweep_scaling.py [--sizes 100 1000 10000] [--completed DIR]

``--completed DIR``: a folder in which the default sweep has run (e.g. the repository root after
`snakemake --cores 2`); its no-op rerun (`snakemake --cores 2`, nothing to do) is timed there.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
MODELS = ["minilm-l2", "minilm-l4", "minilm-l6"]
METHODS = ["full", "bitfit", "lora"]
TASKS = ["docstring-module", "docstring-match"]


def sweep_config(runs: int) -> dict:
    per_seed = len(MODELS) * len(METHODS) * len(TASKS)
    seeds = list(range(-(-runs // per_seed)))
    return {
        "models": MODELS,
        "methods": METHODS,
        "tasks": TASKS,
        "seeds": seeds,
        "budget": {"steps": 100, "batch_size": 16, "max_length": 64},
    }


def snakemake(workdir: Path, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(workdir),
            *args,
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--completed", type=Path, default=None)
    args = parser.parse_args()
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as folder:
            config = Path(folder) / "config.yaml"
            settings = sweep_config(size)
            config.write_text(yaml.safe_dump(settings))
            runs = len(settings["seeds"]) * len(MODELS) * len(METHODS) * len(TASKS)
            seconds = snakemake(Path(folder), "-n", "--quiet", "all", "--configfile", str(config))
            print(f"plan {runs} runs (snakemake -n): {seconds:.1f} s")
    if args.completed:
        seconds = snakemake(args.completed, "--cores", "2")
        print(f"no-op rerun of the completed sweep in {args.completed}: {seconds:.1f} s")


if __name__ == "__main__":
    main()
