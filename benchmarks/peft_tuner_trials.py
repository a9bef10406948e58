"""Try every ``peft:<tuner>`` method on a classifier and a causal LM with a short run, and
record what happened in ``methods/peft_tuners.csv`` (read back by the plugin:
``PeftTuner.tried``, ``peftbench list methods``, docs/methods.md).

Per tuner × trial model: the spec is resolved and checked as a sweep plans it (a refusal there
is ``refused`` with its message), then ``peftbench run`` trains it for ``--steps`` steps (the
record's status and message). Where the run is ``ok``, ``merge`` says whether the tuner folds
into the base weights: the adapted model's trainable tensors are perturbed, and merging must
keep its logits (``merges``), or the method keeps its modules (``keeps modules``).

    python benchmarks/peft_tuner_trials.py [--steps 3] [--only peft:oft,peft:loha]
"""

from __future__ import annotations

import argparse
import copy
import csv
import sys
import tempfile
import time
from pathlib import Path

TRIAL_MODELS = (
    ("minilm-l2", "docstring-match", "classifier"),
    ("tiny-llama", "docstring-match-lm", "causal LM"),
)
MAX_LENGTH = 32
FIELDS = ("method", "model", "head", "status", "message", "merge", "seconds", "peft_version")
OUT = Path(__file__).resolve().parents[1] / "methods" / "peft_tuners.csv"


def merge_check(method_name: str, model_name: str, task_name: str, hparams: dict) -> str:
    """Whether merging keeps the outputs of an adapted model whose trainable tensors are
    perturbed (so that the update is not zero)."""
    import torch

    from peftbench.plugin.method import unfreeze_head
    from peftbench.plugin.registry import METHODS, MODELS, TASKS

    method, task = METHODS.get(method_name), TASKS.get(task_name)
    torch.manual_seed(0)
    loaded = MODELS.get(model_name).load(num_labels=task.num_labels or 2, head=task.head)
    model = method.apply(loaded.model, hparams, loaded.info)
    unfreeze_head(model, loaded.info, method)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.01)
    model.eval()
    ids = torch.randint(5, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    try:
        merged = method.merge(copy.deepcopy(model))
    except Exception as error:  # what a run would meet when it measures the merged model
        return f"merge fails: {type(error).__name__}: {str(error)[:200]}"
    if merged is None:
        return "keeps modules"
    merged.eval()
    with torch.no_grad():
        after = merged(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    if torch.allclose(before, after, rtol=1e-3, atol=1e-4):
        return "merges"
    return f"merge changes the outputs (max |diff| {float((before - after).abs().max()):.3g})"


def trial(
    method: str, model: str, task: str, steps: int, folder: Path, tokenized: str
) -> dict[str, str]:
    from peftbench.planning.feasibility import spec_problems
    from peftbench.planning.spec import resolve_spec
    from peftbench.plugin.errors import SpecError
    from peftbench.run.runner import execute

    budget = {"steps": steps, "batch_size": 4, "max_length": MAX_LENGTH, "max_eval_examples": 16}
    try:
        spec = resolve_spec(model, method, task, 0, budget)
        problems = spec_problems(spec)
    except SpecError as error:
        problems = [str(error)]
    if problems:
        return {"status": "refused", "message": "; ".join(problems), "merge": ""}
    record = execute(spec, folder, tokenized, threads=2, lock_dir=folder / "locks")
    status = record["status"]
    merge = merge_check(method, model, task, spec.hparams) if status["code"] == "ok" else ""
    return {"status": status["code"], "message": status.get("message") or "", "merge": merge}


def write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: (r["method"], r["model"])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="training steps per run")
    parser.add_argument("--only", default="", help="comma-separated method names (default: all)")
    parser.add_argument("--out", type=Path, default=OUT, help="the CSV to write")
    args = parser.parse_args(argv)

    from importlib.metadata import version

    from peftbench.methods.peft_tuners import tuner_names
    from peftbench.run.data import save_tokenized

    names = args.only.split(",") if args.only else tuner_names()
    kept = []
    if args.out.exists():  # the other tuners' rows stay
        with args.out.open(newline="") as handle:
            kept = [r for r in csv.DictReader(handle) if r["method"] not in names]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tokenized = {}
        for model, task, _ in TRIAL_MODELS:  # once per model, as a sweep's tokenize rule does
            tokenized[model] = str(Path(tmp) / "tokenized" / model)
            save_tokenized(tokenized[model], task, model, MAX_LENGTH)
        for name in names:
            for model, task, head in TRIAL_MODELS:
                start = time.perf_counter()
                folder = Path(tmp) / name.replace(":", "_") / model
                outcome = trial(name, model, task, args.steps, folder, tokenized[model])
                row = {
                    "method": name,
                    "model": model,
                    "head": head,
                    **outcome,
                    "message": " ".join(outcome["message"].split())[:600],
                    "seconds": f"{time.perf_counter() - start:.0f}",
                    "peft_version": version("peft"),
                }
                print(f"{name:<30} {model:<10} {row['status']:<11} {row['merge']:<14} "
                      f"{row['message'][:120]}", flush=True)  # fmt: skip
                rows.append(row)
                write_rows(args.out, kept + rows)  # after each run: an interruption keeps them
    return 0


if __name__ == "__main__":
    sys.exit(main())
