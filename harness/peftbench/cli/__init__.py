"""The ``peftbench`` command line."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from tabulate import tabulate

from peftbench.cli.console import configure_output
from peftbench.planning.grid import DEFAULT_SETTING
from peftbench.planning.spec import (
    PRECISIONS,
    SPEC_FILE,
    TRAINING_DEFAULTS,
    RunSpec,
    SpecError,
    parse_assignments,
    read_spec,
    resolve_spec,
)
from peftbench.plugin.method import HParam
from peftbench.plugin.registry import METHODS, MODELS, TASKS, UnknownNameError
from peftbench.records.record import RecordError

REGISTRIES = {"methods": METHODS, "tasks": TASKS, "models": MODELS}
LIST_KINDS = (*sorted(REGISTRIES), "hparams")

TRAINING_HPARAM_HELP: dict[str, str] = {
    "steps": "AdamW optimizer steps, cycling over the training data",
    "batch_size": "training examples per step",
    "eval_batch_size": "examples per batch when predicting on the validation and dev splits",
    "max_length": "tokens per example; longer examples are truncated",
    "warmup_ratio": "fraction of the steps with a linear warm-up (then the lr_scheduler's decay)",
    "lr_scheduler": "transformers' schedule after the warm-up (linear: decay to 0; cosine, ...)",
    "weight_decay": "AdamW weight decay",
    "max_grad_norm": "clip the gradients' global norm to this before each step (0: no clipping)",
    "head_lr": "learning rate of the task head (0: the method's lr)",
    "precision": f"one of {', '.join(PRECISIONS)} (auto: bf16 where native, else fp32; "
    "bf16/fp16 mixed; int8/nf4: quantized base)",
    "max_eval_examples": "validation and dev examples scored (0: all)",
    "max_new_tokens": "generation tasks: most tokens generated per example (0: the task's own)",
    "checkpoint_every_steps": "checkpoint every N steps (0: not by steps); a rerun resumes from it",
    "checkpoint_every_minutes": "checkpoint every N minutes of training (0: not by time)",
    "forgetting_texts": "language-model runs: forgetting is measured on the first N texts of "
    "the general-text sample (docs/measurement.md)",
}
"""Meaning of each training hyperparameter (:data:`peftbench.planning.spec.TRAINING_DEFAULTS`)."""
MEANING_WIDTH = 70
"""Characters per line of the meaning column of ``list hparams`` (longer meanings wrap)."""


def training_hparams() -> dict[str, HParam]:
    """The training hyperparameters (:data:`peftbench.planning.spec.TRAINING_DEFAULTS`) with
    their meanings."""
    return {k: HParam(v, TRAINING_HPARAM_HELP.get(k, "-")) for k, v in TRAINING_DEFAULTS.items()}


def hparam_rows(declared: dict[str, HParam]) -> list[list[Any]]:
    """One row per hyperparameter: name, type, default, valid values ("-": any of its type,
    bounds as ``low..high``, choices as ``a|b``), meaning."""
    rows = []
    for name, h in declared.items():
        default = "null" if h.default is None else h.default
        valid = (
            "|".join(map(str, h.choices))
            if h.choices
            else "..".join(f"{b:g}" for b in h.bounds)
            if h.bounds
            else "-"
        )
        rows.append([name, h.type_name, repr(default) if isinstance(default, str) and
                     h.default is not None else default, valid, h.help or "-"])  # fmt: skip
    return rows


def hparam_table(declared: dict[str, HParam]) -> str:
    headers = ["name", "type", "default", "valid", "meaning"]
    return tabulate(
        hparam_rows(declared),
        headers,
        tablefmt="plain",
        disable_numparse=True,
        maxcolwidths=[None, None, None, None, MEANING_WIDTH],
    )


def list_hparams(method_name: str | None) -> None:
    method = None if method_name is None else METHODS.get(method_name)
    own = {} if method is None else method.hyperparameters
    training = {k: h for k, h in training_hparams().items() if k not in own}
    print("training hyperparameters (every method; --set KEY=VALUE):")
    print(hparam_table(training))
    if method is None:
        print("\nmethod hyperparameters: peftbench list hparams METHOD")
        return
    print(f"\n{method_name} hyperparameters (--set KEY=VALUE; json: JSON text; null: none):")
    print(hparam_table(own))


def cmd_list(args: argparse.Namespace) -> int:
    if args.kind == "hparams":
        list_hparams(args.method)
        return 0
    if args.method is not None:
        raise SpecError(
            f"list {args.kind} takes no METHOD (got {args.method!r}); "
            "only 'list hparams METHOD' does"
        )
    registry = REGISTRIES[args.kind]
    width = max(len(name) for name in registry.names())
    for name, plugin in registry:
        tried = "; ".join(
            f"{where}: {outcome}" for where, outcome in getattr(plugin, "tried", {}).items()
        )
        print(f"{name:<{width}}  {plugin.description}" + (f" [tried: {tried}]" if tried else ""))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    configure_output(args.library_warnings)
    import traceback

    from peftbench.run.runner import HarnessError, execute

    spec = run_spec(args)
    command = "peftbench " + shlex.join(sys.argv[1:]) if args.command is None else args.command
    from peftbench.run.distributed import launch, needs_launch

    if needs_launch(spec.processes):  # accelerate launch runs this spec in spec.processes ranks
        return launch(
            spec,
            args.out,
            command,
            tokenized=args.tokenized,
            threads=args.threads,
            library_warnings=args.library_warnings,
            save_artifact=args.save_artifact,
        )
    try:
        record = execute(
            spec, args.out, args.tokenized, args.threads, command, save_artifacts=args.save_artifact
        )
    except HarnessError as error:
        traceback.print_exception(error)  # the whole story, for the log
        print(
            f"peftbench: error: {error} (no record written: the environment or the harness is "
            "broken, not this combination)",
            file=sys.stderr,
        )
        return 1
    status = record["status"]
    summary = record["metrics"].get("values", {})
    print(f"{spec.run_id}: {status['code']} {json.dumps(summary)}", file=sys.stderr)
    if status["code"] != "ok":
        print(status["message"], file=sys.stderr)
    return 0


RUN_FLAGS = ("model", "method", "task", "seed", "set", "data_dir", "setting", "gpus", "processes")
"""``peftbench run`` options that describe the run: given by flags, or all by ``--spec``."""


def run_spec(args: argparse.Namespace) -> RunSpec:
    """The run ``peftbench run`` was asked for: the ``--spec`` file, or the flags resolved."""
    if args.spec is not None:
        given = [f"--{f.replace('_', '-')}" for f in RUN_FLAGS if getattr(args, f) is not None]
        if given:
            raise SpecError(f"--spec describes the whole run; drop {', '.join(given)}")
        return read_spec(args.spec)
    missing = [f"--{f}" for f in ("model", "method", "task") if getattr(args, f) is None]
    if missing:
        raise SpecError(f"peftbench run needs --spec FILE, or {', '.join(missing)}")
    return resolve_spec(
        args.model,
        args.method,
        args.task,
        0 if args.seed is None else args.seed,
        parse_assignments(args.set or []),
        args.data_dir,
        args.setting or DEFAULT_SETTING,
        args.gpus or 0,
        args.processes,
    )


def cmd_tokenize(args: argparse.Namespace) -> int:
    configure_output(args.library_warnings)
    from peftbench.run.data import save_tokenized

    TASKS.check(args.task)
    MODELS.check(args.model)
    save_tokenized(args.out, args.task, args.model, args.max_length, args.data_dir)
    return 0


def cmd_aggregate(args: argparse.Namespace) -> int:
    from peftbench.reporting.aggregate import collect, write_table

    write_table(collect(args.records, skip_invalid=args.skip_invalid), args.out)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from peftbench.reporting.report import write_reports

    write_reports(args.table, args.markdown, args.html)
    return 0


def cmd_count(args: argparse.Namespace) -> int:
    configure_output(library_warnings=False)
    from peftbench.planning.counting import NotApplicableError, count_model_method

    method, overrides, head = args.method, parse_assignments(args.set), "classification"
    if args.peft_experiment is not None:  # peft's experiments tune causal LMs
        from peftbench.planning.peft_experiments import read_experiment

        if method is not None:
            raise SpecError("--peft-experiment names the method: drop --method")
        experiment = read_experiment(args.peft_experiment, training=False)
        method, head = experiment.method, "causal-lm"
        overrides = {**experiment.hparams, **overrides}
    elif method is None:
        raise SpecError("peftbench count needs --method or --peft-experiment")
    try:
        counts = count_model_method(args.model, method, overrides, args.num_labels, head)
    except NotApplicableError as error:
        print(f"peftbench: {error}", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps(counts, indent=2))
    else:
        for key, value in counts.items():  # JSON for the rest: null, not None; the reasons
            shown = value if isinstance(value, (int, float, str)) else json.dumps(value)
            print(f"{key:<24} {shown}")
    return 0


def cmd_codehash(args: argparse.Namespace) -> int:
    from peftbench.planning.codehash import code_hash

    print(code_hash(args.model, args.method, args.task))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from peftbench.reporting.verify import verify

    checked, problems = verify(args.results_dir)
    for problem in problems:
        print(problem)
    print(f"{checked} valid records, {len(problems)} problems", file=sys.stderr)
    return 1 if problems else 0


SET_HELP = "hyperparameter override (repeatable); names: peftbench list hparams METHOD"
LIBRARY_WARNINGS_HELP = (
    "also show the libraries' non-actionable notices (transformers below error level, "
    "bitsandbytes' kernel notices, transformers/peft deprecation warnings)"
)


def run_epilog() -> str:
    """``run --help``'s closing text: the training hyperparameters and where the others are."""
    return (
        "hyperparameters (--set KEY=VALUE): the training ones below, and the method's own:\n"
        "  peftbench list hparams METHOD\n\n" + hparam_table(training_hparams())
    )


def cmd_compare(args: argparse.Namespace) -> int:
    from peftbench.reporting.aggregate import compare_methods

    METHODS.check(args.method_a)
    METHODS.check(args.method_b)
    print(compare_methods(args.results_dir, args.method_a, args.method_b, args.model, args.task))
    return 0


def _add_list_command(sub: argparse._SubParsersAction) -> None:
    listing = sub.add_parser(
        "list", help="list registered methods, tasks or models, or the hyperparameters"
    )
    listing.add_argument("kind", choices=LIST_KINDS, help="what to list")
    listing.add_argument(
        "method", nargs="?", default=None, help="with hparams: also list this method's own"
    )
    listing.set_defaults(func=cmd_list)


def _add_run_command(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser(
        "run",
        help="train and evaluate one model × method × task × seed",
        epilog=run_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--spec",
        default=None,
        metavar="FILE",
        help=f"the run's {SPEC_FILE}, as the workflow writes it (then no --model, --method, "
        "--task, --seed, --set, --data-dir or --setting)",
    )
    run.add_argument("--model", help="model name (peftbench list models)")
    run.add_argument("--method", help="method name (peftbench list methods)")
    run.add_argument("--task", help="task name (peftbench list tasks)")
    run.add_argument("--seed", type=int, help="random seed (default: 0)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP)
    run.add_argument("--data-dir", help="local data folder for tasks that take one")
    run.add_argument(
        "--gpus",
        type=int,
        help="0: train on the CPU (the default, also on a GPU host); N: on N free GPUs, one "
        "process each",
    )
    run.add_argument(
        "--processes",
        type=int,
        help="processes that train, each on a share of every batch (default: one per GPU; "
        "N on the CPU: gloo)",
    )
    run.add_argument(
        "--setting",
        help="label of the grid point these --set values make (recorded; names the run; "
        f"default: {DEFAULT_SETTING})",
    )
    run.add_argument("--tokenized", default=None, help="folder written by 'peftbench tokenize'")
    run.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    run.add_argument(
        "--out", required=True, help=f"the run's folder: {SPEC_FILE} (with flags) and result.json"
    )
    run.add_argument(
        "--save-artifact",
        action="store_true",
        help="also keep the trained method and head in OUT/artifact/, in the format its library "
        "loads (peftbench.run.artifacts.load_artifact; not part of the spec or the result)",
    )
    run.add_argument("--library-warnings", action="store_true", help=LIBRARY_WARNINGS_HELP)
    run.add_argument("--command", default=None, help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)


def _add_tokenize_command(sub: argparse._SubParsersAction) -> None:
    tok = sub.add_parser("tokenize", help="tokenize a task for a model's tokenizer, saved to disk")
    tok.add_argument("--task", required=True, help="task name (peftbench list tasks)")
    tok.add_argument("--model", required=True, help="model whose tokenizer is used")
    tok.add_argument("--max-length", type=int, required=True, help="tokens kept per example")
    tok.add_argument("--data-dir", default=None, help="local data folder for tasks that take one")
    tok.add_argument("--out", required=True, help="folder for the tokenized splits")
    tok.add_argument("--library-warnings", action="store_true", help=LIBRARY_WARNINGS_HELP)
    tok.set_defaults(func=cmd_tokenize)


def _add_aggregate_command(sub: argparse._SubParsersAction) -> None:
    agg = sub.add_parser("aggregate", help="collect result records into one flat CSV table")
    agg.add_argument("records", nargs="+", help="result.json files")
    agg.add_argument("--out", required=True, help="CSV file to write")
    agg.add_argument(
        "--skip-invalid", action="store_true", help="warn about bad records instead of stopping"
    )
    agg.set_defaults(func=cmd_aggregate)


def _add_report_command(sub: argparse._SubParsersAction) -> None:
    rep = sub.add_parser("report", help="render leaderboards from the aggregated table")
    rep.add_argument("table", help="CSV written by 'peftbench aggregate'")
    rep.add_argument("--markdown", required=True, help="markdown leaderboard to write")
    rep.add_argument("--html", required=True, help="HTML leaderboard to write")
    rep.set_defaults(func=cmd_report)


def _add_count_command(sub: argparse._SubParsersAction) -> None:
    count = sub.add_parser(
        "count", help="parameter counts of a model × method, without weights or training"
    )
    count.add_argument("--model", required=True, help="model name (peftbench list models)")
    count.add_argument("--method", help="method name (peftbench list methods)")
    count.add_argument(
        "--peft-experiment",
        metavar="FOLDER",
        help="instead of --method: a peft method_comparison experiment folder (its "
        "adapter_config.json), counted with the model's language-model head, as peft counts",
    )
    count.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    count.add_argument(
        "--num-labels", type=int, default=2, help="classes of the task head (default: 2)"
    )
    count.add_argument("--json", action="store_true", help="one JSON object")
    count.set_defaults(func=cmd_count)


def _add_codehash_command(sub: argparse._SubParsersAction) -> None:
    code = sub.add_parser(
        "codehash", help="hash of the code a model × method × task run depends on"
    )
    code.add_argument("--model", required=True, help="model name (peftbench list models)")
    code.add_argument("--method", required=True, help="method name (peftbench list methods)")
    code.add_argument("--task", required=True, help="task name (peftbench list tasks)")
    code.set_defaults(func=cmd_codehash)


def _add_verify_command(sub: argparse._SubParsersAction) -> None:
    check = sub.add_parser("verify", help="check a results folder's records and leaderboard")
    check.add_argument("results_dir", help="the sweep's results folder (e.g. results)")
    check.set_defaults(func=cmd_verify)


def _add_compare_command(sub: argparse._SubParsersAction) -> None:
    compare = sub.add_parser(
        "compare", help="paired test of two methods on the same validation examples"
    )
    compare.add_argument("results_dir", help="the sweep's results folder (e.g. results)")
    compare.add_argument("method_a", help="first method (A)")
    compare.add_argument("method_b", help="second method (B)")
    compare.add_argument("--model", help="only this model (default: every model both ran)")
    compare.add_argument("--task", help="only this task (default: every task both ran)")
    compare.set_defaults(func=cmd_compare)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peftbench", description=__doc__)
    sub = parser.add_subparsers(dest="command_name", required=True)
    _add_list_command(sub)
    _add_run_command(sub)
    _add_tokenize_command(sub)
    _add_aggregate_command(sub)
    _add_report_command(sub)
    _add_count_command(sub)
    _add_codehash_command(sub)
    _add_verify_command(sub)
    _add_compare_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UnknownNameError, SpecError, RecordError) as error:
        print(f"peftbench: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
