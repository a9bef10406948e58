"""After the README's command 1: every run of the default sweep has a record, and it is ``ok``.

Exits non-zero naming each missing or unfinished run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from peftbench.planning.sweep import plan_sweep
from peftbench.records.record import read_record

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    specs = plan_sweep(config).specs
    problems = []
    for spec in specs:
        path = ROOT / config["results_dir"] / "runs" / spec.run_id / "result.json"
        if not path.is_file():
            problems.append(f"{spec.run_id}: no record at {path}")
            continue
        status = read_record(path)["status"]
        if status["code"] != "ok":
            problems.append(f"{spec.run_id}: {status['code']}: {status['message'][:300]}")
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"default sweep: {len(specs) - len(problems)} of {len(specs)} runs ok", file=sys.stderr)
    return 1 if problems or not specs else 0


if __name__ == "__main__":
    sys.exit(main())
