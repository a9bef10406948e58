"""The harness's own overhead: a `peftbench run` against a minimal hand-written torch + peft
script doing the same work (tokenize, load, LoRA, train for the same batches and steps, predict
the same validation and dev rows), back to back, alternating, each in a fresh process. Prints
one line per figure, and the harness's wall time per phase. Targets: train-phase throughput
ratio >= 0.97, train-phase memory ratio <= 1.05, whole-process ratio (minimal's wall time over
the harness's) >= 0.90.

    python benchmarks/overhead.py [--steps 100] [--repeats 3] [--model minilm-l2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WARMUP = 3  # the harness's WARMUP_STEPS_EXCLUDED
EVAL_EXAMPLES = 16  # validation and dev rows predicted by both
PHASES = ("load", "train", "eval", "dev", "count")


def minimal_loop(model_name: str, steps: int, batch_size: int, max_length: int, seed: int) -> dict:
    """Train LoRA the plain way; report what the harness reports for its train phase."""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding, set_seed

    from peftbench import MODELS
    from peftbench.run.data import tokenize_task
    from peftbench.run.heads import eval_subset
    from peftbench.run.measure import phase

    torch.set_num_threads(1)
    source = MODELS.get(model_name)
    data, _ = tokenize_task("docstring-match", model_name, max_length)
    set_seed(seed)
    model = source.load(num_labels=2).model
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules=["query", "value"], modules_to_save=["classifier"]
    )
    model = get_peft_model(model, config)
    trainable = [p for p in model.parameters() if p.requires_grad]
    # The harness's optimizer (docs/measurement.md, Precision): the same kernel on both sides,
    # so the ratio measures the harness, not a faster AdamW.
    optimizer = torch.optim.AdamW(trainable, lr=5e-4, fused=True)
    collate = DataCollatorWithPadding(source.tokenizer())
    loader = DataLoader(
        data["train"],
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
    )
    measured: dict = {"timing": {}, "memory": {}}
    times, samples = [], []
    batches = iter(loader)
    model.train()
    with phase("train", "cpu", measured):
        for _ in range(steps):
            batch = next(batches)
            start = time.perf_counter()
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - start)
            samples.append(len(batch["labels"]))
    model.eval()
    with torch.no_grad():
        for split in ("validation", "dev"):
            rows = eval_subset(data[split], EVAL_EXAMPLES)
            for batch in DataLoader(rows, batch_size=64, collate_fn=collate):
                model(**{k: v for k, v in batch.items() if k != "labels"}).logits.argmax(-1)
    return {
        "train_samples_per_s": sum(samples[WARMUP:]) / sum(times[WARMUP:]),
        "train_peak_rss_bytes": measured["memory"]["train_cpu_peak_rss_bytes"],
    }


def harness_run(model: str, steps: int, batch_size: int, max_length: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable,
            "-m",
            "peftbench",
            "run",
            "--model",
            model,
            "--method",
            "lora",
            "--task",
            "docstring-match",
            "--seed",
            str(seed),
            "--threads",
            "1",
            "--set",
            f"steps={steps}",
            "--set",
            f"batch_size={batch_size}",
            "--set",
            f"max_length={max_length}",
            "--set",
            f"max_eval_examples={EVAL_EXAMPLES}",
            "--set",
            "warmup_ratio=0",
            "--out",
            out,
        ]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        wall = time.perf_counter() - start
        record = json.loads((Path(out) / "result.json").read_text())
    phases = {name: record["timing"][f"{name}_s"] for name in PHASES}
    return {
        "train_samples_per_s": record["throughput"]["train_samples_per_s"],
        "train_peak_rss_bytes": record["memory"]["train_cpu_peak_rss_bytes"],
        "wall_s": wall,
        **{f"{name}_s": seconds for name, seconds in phases.items()},
        "outside_phases_s": wall - sum(phases.values()),
    }


def minimal_run(model: str, steps: int, batch_size: int, max_length: int, seed: int) -> dict:
    code = (
        f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"from overhead import minimal_loop; "
        f"print(json.dumps(minimal_loop({model!r}, {steps}, {batch_size}, {max_length}, {seed})))"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l2", help="a peftbench model name")
    parser.add_argument("--steps", type=int, default=100, help="the default budget's 100")
    parser.add_argument("--batch-size", type=int, default=16, help="training examples per step")
    parser.add_argument("--max-length", type=int, default=64, help="tokens per example")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, alternating")
    args = parser.parse_args()
    work = (args.model, args.steps, args.batch_size, args.max_length, 0)
    harness, minimal = [], []
    for _ in range(args.repeats):  # alternate, so drift in machine load hits both alike
        harness.append(harness_run(*work))
        minimal.append(minimal_run(*work))

    def median(rows: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    for key in ("train_samples_per_s", "train_peak_rss_bytes"):
        print(f"harness {key}: {median(harness, key):.4g}")
        print(f"minimal {key}: {median(minimal, key):.4g}")
    print(
        f"throughput ratio (harness/minimal, target >= 0.97): "
        f"{median(harness, 'train_samples_per_s') / median(minimal, 'train_samples_per_s'):.3f}"
    )
    print(
        f"memory ratio (harness/minimal train-phase peak RSS, target <= 1.05): "
        f"{median(harness, 'train_peak_rss_bytes') / median(minimal, 'train_peak_rss_bytes'):.3f}"
    )
    print(
        f"whole-process ratio (minimal/harness wall time, target >= 0.90): "
        f"{median(minimal, 'wall_s') / median(harness, 'wall_s'):.3f} "
        f"({median(minimal, 'wall_s'):.1f} s / {median(harness, 'wall_s'):.1f} s)"
    )
    print("harness wall time per phase (median s; outside: start-up, data, spec and record):")
    for key in [*(f"{name}_s" for name in PHASES), "outside_phases_s", "wall_s"]:
        print(f"  {key.removesuffix('_s'):<15} {median(harness, key):7.2f}")


if __name__ == "__main__":
    main()
