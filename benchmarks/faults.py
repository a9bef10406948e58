"""Fault injection: runs killed mid-training (half SIGKILL, half SIGTERM, at random steps),
rerun, and compared with an uninterrupted run; and what checkpoints cost.

Prints one line per faulted run, then how many completed, how many records equal the
uninterrupted one (status, losses, metrics, counts), the steps recomputed, and the checkpoints'
cost as a share of train time: at an aggressive interval (measured), and at the default
interval (measured on a run with the defaults and, for a run long enough to write them,
from the seconds one checkpoint takes). Targets: every run completed and identical; the cost
at the default interval at most 2% of train time (docs/runs.md, "Checkpoints and resume").

    python benchmarks/faults.py [--runs 6] [--steps 100] [--every 10] [--method lora] ...

A SIGTERM run checkpoints at the step boundary after the signal and exits with status 75: it
recomputes nothing. A SIGKILL run dies where it is, and its rerun recomputes the steps it made
after its last checkpoint: how many is estimated from the kill's time after the checkpoint's
(or the first step's) and the median step time; the killed process cannot say.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from peftbench.run.checkpoint import CHECKPOINT_FILE, EXIT_CHECKPOINTED

COMPARED = ("status", "training", "metrics", "params")
"""What a resumed run must reproduce exactly: its status, losses, metrics and counts."""
DEFAULT_MINUTES = 10.0
"""``checkpoint_every_minutes``'s default (peftbench.planning.spec.TRAINING_DEFAULTS)."""
SETTINGS = ("max_length=32", "batch_size=8", "max_eval_examples=32")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--runs", type=int, default=6, help="runs to kill, half SIGKILL, half SIGTERM (6)")
    add("--steps", type=int, default=100, help="optimizer steps per run (100)")
    add(
        "--every",
        type=int,
        default=10,
        help="checkpoint_every_steps of the killed runs: the aggressive interval whose cost is "
        "measured (10)",
    )
    add("--model", default="minilm-l2", help="model (minilm-l2)")
    add("--method", default="lora", help="method (lora; full has the largest training state)")
    add("--task", default="docstring-match", help="task (docstring-match)")
    add(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"a further hyperparameter of every run (besides {', '.join(SETTINGS)})",
    )
    add("--threads", type=int, default=1, help="CPU threads per run (1)")
    add("--seed", type=int, default=0, help="seed of the steps the kills aim at (0)")
    add("--out", type=Path, default=None, help="folder for the runs (a new temporary one)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.every < 1 or args.steps < 2:
        parser.error("--runs and --every must be >= 1, --steps >= 2")
    return args


def command_of(args: argparse.Namespace, *extra: str) -> list[str]:
    settings = [*SETTINGS, f"steps={args.steps}", *args.set, *extra]
    command = [sys.executable, "-m", "peftbench", "run", "--model", args.model]
    command += ["--method", args.method, "--task", args.task, "--threads", str(args.threads)]
    return command + [item for s in settings for item in ("--set", s)]


def start(command: list[str], out: Path, label: str) -> tuple[subprocess.Popen, Path]:
    log = out.parent / f"{out.name}.{label}.log"
    with log.open("w") as handle:
        process = subprocess.Popen(
            [*command, "--out", str(out)], stdout=handle, stderr=subprocess.STDOUT
        )
    return process, log


def finish(command: list[str], out: Path, label: str) -> tuple[int, dict | None]:
    """Run to the end: the exit status and the record (``None`` when none was written)."""
    code = start(command, out, label)[0].wait()
    result = out / "result.json"
    return code, json.loads(result.read_text()) if code == 0 and result.exists() else None


def training_began(log: Path, process: subprocess.Popen) -> float:
    """``time.time()`` when the run's log says its train phase started (polled)."""
    while "phase train started" not in log.read_text():
        if process.poll() is not None:
            raise SystemExit(f"faults: the run ended before training: {log}")
        time.sleep(0.01)
    return time.time()


def fault(command: list[str], out: Path, step: int, signum: int, pace: tuple[float, float]):
    """Start a run, send ``signum`` when it should be at ``step`` (``pace``: seconds before
    the first step, seconds per step), rerun it; what happened."""
    before, step_s = pace
    process, log = start(command, out, "killed")
    began = training_began(log, process)
    time.sleep(max(0.0, began + before + step * step_s - time.time()))
    killed_at = time.time()
    process.send_signal(signum)
    code = process.wait()
    path = out / CHECKPOINT_FILE
    saved = torch.load(path, weights_only=True)["step"] if path.exists() else None
    if code == EXIT_CHECKPOINTED:  # checkpointed at the step boundary: nothing lost
        recomputed = 0
    else:  # every step since the checkpoint (or the first) is made again
        since = path.stat().st_mtime if saved is not None else began + before
        recomputed = max(0, round((killed_at - since) / step_s))
    rerun, record = finish(command, out, "rerun")
    return {
        "signal": signal.Signals(signum).name,
        "target": step,
        "exit": code,
        "checkpoint": saved,
        "recomputed": recomputed,
        "rerun": rerun,
        "record": record,
    }


def cost(record: dict) -> tuple[int, float, float]:
    """Checkpoints written, their seconds, and those seconds over the train phase's."""
    resume, train_s = record["resume"], record["timing"]["train_s"]
    return resume["checkpoints"], resume["checkpoint_s"], resume["checkpoint_s"] / train_s


def same(record: dict | None, reference: dict) -> bool:
    return record is not None and all(record[key] == reference[key] for key in COMPARED)


def report_costs(args: argparse.Namespace, frequent: dict, default: dict) -> None:
    written, seconds, share = cost(frequent)
    print(
        f"checkpoint cost, every {args.every} steps: {written} checkpoints, {seconds:.3f} s, "
        f"{share:.2%} of train time ({frequent['timing']['train_s']:.2f} s)"
    )
    written_d, _, share_d = cost(default)
    each, interval = seconds / max(written, 1), DEFAULT_MINUTES * 60
    print(
        f"checkpoint cost, default interval ({DEFAULT_MINUTES:g} min): {written_d} checkpoints "
        f"in this run, {share_d:.2%} of its train time; in a run long enough to write them, "
        f"{each:.3f} s per {interval:.0f} s of training: {each / (interval + each):.3%}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = args.out or Path(tempfile.mkdtemp(prefix="peftbench-faults-"))
    folder.mkdir(parents=True, exist_ok=True)
    aggressive = command_of(args, f"checkpoint_every_steps={args.every}")
    _, default = finish(command_of(args), folder / "default", "whole")
    _, frequent = finish(aggressive, folder / "aggressive", "whole")
    if default is None or frequent is None:
        raise SystemExit(f"faults: an uninterrupted run wrote no record: see {folder}")
    step_s = default["throughput"]["train_step_median_s"]
    before = max(0.0, default["timing"]["train_s"] - step_s * args.steps)
    print(
        f"faults: {args.runs} runs of {args.model} x {args.method} x {args.task}, {args.steps} "
        f"steps, checkpoints every {args.every} steps, median step {step_s * 1000:.1f} ms "
        f"(runs in {folder}); checkpointing changes no result: {same(frequent, default)}"
    )
    draw = random.Random(args.seed)
    signums = [signal.SIGKILL, signal.SIGTERM] * args.runs
    outcomes = []
    for i, signum in enumerate(signums[: args.runs]):
        step = draw.randint(1, args.steps - 1)
        outcome = fault(aggressive, folder / f"fault{i}", step, signum, (before, step_s))
        outcome["identical"] = same(outcome["record"], frequent)
        outcomes.append(outcome)
        resume = (outcome["record"] or {}).get("resume", {})
        print(
            f"  run {i}: {outcome['signal']} aimed at step {step}: exit {outcome['exit']}, "
            f"checkpoint at step {outcome['checkpoint']}, ~{outcome['recomputed']} steps "
            f"recomputed; rerun exit {outcome['rerun']}, resumed from step "
            f"{resume.get('from_step')}, lost_s {resume.get('lost_s')}; identical: "
            f"{outcome['identical']}"
        )
    completed = sum(o["record"] is not None for o in outcomes)
    identical = sum(o["identical"] for o in outcomes)
    print(
        f"completed: {completed}/{args.runs}; identical to the uninterrupted record "
        f"({', '.join(COMPARED)}): {identical}/{args.runs}"
    )
    print(
        f"steps recomputed: {sum(o['recomputed'] for o in outcomes)} in all (SIGTERM: none; "
        "SIGKILL: estimated from the kill's time after the last checkpoint)"
    )
    report_costs(args, frequent, default)
    return 0 if completed == identical == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
