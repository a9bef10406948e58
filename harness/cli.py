"""The ``peftbench`` command line."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence

from peftbench.grid import DEFAULT_SETTING
from peftbench.record import RecordError
from peftbench.registry import METHODS, MODELS, TASKS, UnknownNameError
from peftbench.spec import SpecError, parse_assignments, resolve_spec

REGISTRIES = {"methods": METHODS, "tasks": TASKS, "models": MODELS}


def cmd_list(args: argparse.Namespace) -> int:
    registry = REGISTRIES[args.kind]
    width = max(len(name) for name in registry.names())
    for name, plugin in registry:
        print(f"{name:<{width}}  {plugin.description}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from peftbench.runner import execute

    spec = resolve_spec(
        args.model,
        args.method,
        args.task,
        args.seed,
        parse_assignments(args.set),
        args.data_dir,
        args.setting,
    )
    command = "peftbench " + shlex.join(sys.argv[1:]) if args.command is None else args.command
    record = execute(spec, args.out, args.tokenized, args.threads, command)
    status = record["status"]
    summary = record["metrics"].get("values", {})
    print(f"{spec.run_id}: {status['code']} {json.dumps(summary)}", file=sys.stderr)
    if status["code"] != "ok":
        print(status["message"], file=sys.stderr)
    return 0


def cmd_tokenize(args: argparse.Namespace) -> int:
    from peftbench.data import save_tokenized

    TASKS.check(args.task)
    MODELS.check(args.model)
    save_tokenized(args.out, args.task, args.model, args.max_length, args.data_dir)
    return 0


def cmd_aggregate(args: argparse.Namespace) -> int:
    from peftbench.aggregate import collect, write_table

    write_table(collect(args.records, skip_invalid=args.skip_invalid), args.out)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from peftbench.report import write_reports

    write_reports(args.table, args.markdown, args.html)
    return 0


def cmd_count(args: argparse.Namespace) -> int:
    from peftbench.params import NotApplicableError, count_model_method

    try:
        counts = count_model_method(
            args.model, args.method, parse_assignments(args.set), args.num_labels
        )
    except NotApplicableError as error:
        print(f"peftbench: {error}", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps(counts, indent=2))
    else:
        for key, value in counts.items():
            print(f"{key:<24} {value}")
    return 0


def cmd_codehash(args: argparse.Namespace) -> int:
    from peftbench.codehash import code_hash

    print(code_hash(args.model, args.method, args.task))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from peftbench.verify import verify

    checked, problems = verify(args.results_dir)
    for problem in problems:
        print(problem)
    print(f"{checked} valid records, {len(problems)} problems", file=sys.stderr)
    return 1 if problems else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peftbench", description=__doc__)
    sub = parser.add_subparsers(dest="command_name", required=True)

    listing = sub.add_parser("list", help="list registered methods, tasks or models")
    listing.add_argument("kind", choices=sorted(REGISTRIES))
    listing.set_defaults(func=cmd_list)

    run = sub.add_parser("run", help="train and evaluate one model × method × task × seed")
    run.add_argument("--model", required=True)
    run.add_argument("--method", required=True)
    run.add_argument("--task", required=True)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="hyperparameter override"
    )
    run.add_argument("--data-dir", default=None, help="local data folder for tasks that take one")
    run.add_argument(
        "--setting",
        default=DEFAULT_SETTING,
        help="label of the grid point these --set values make (recorded; names the run)",
    )
    run.add_argument("--tokenized", default=None, help="folder written by 'peftbench tokenize'")
    run.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    run.add_argument("--out", required=True, help="folder for result.json")
    run.add_argument("--command", default=None, help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)

    tok = sub.add_parser("tokenize", help="tokenize a task for a model's tokenizer, saved to disk")
    tok.add_argument("--task", required=True)
    tok.add_argument("--model", required=True)
    tok.add_argument("--max-length", type=int, required=True)
    tok.add_argument("--data-dir", default=None)
    tok.add_argument("--out", required=True)
    tok.set_defaults(func=cmd_tokenize)

    agg = sub.add_parser("aggregate", help="collect result records into one flat CSV table")
    agg.add_argument("records", nargs="+", help="result.json files")
    agg.add_argument("--out", required=True)
    agg.add_argument(
        "--skip-invalid", action="store_true", help="warn about bad records instead of stopping"
    )
    agg.set_defaults(func=cmd_aggregate)

    rep = sub.add_parser("report", help="render leaderboards from the aggregated table")
    rep.add_argument("table")
    rep.add_argument("--markdown", required=True)
    rep.add_argument("--html", required=True)
    rep.set_defaults(func=cmd_report)

    count = sub.add_parser(
        "count", help="parameter counts of a model × method, without weights or training"
    )
    count.add_argument("--model", required=True)
    count.add_argument("--method", required=True)
    count.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    count.add_argument("--num-labels", type=int, default=2)
    count.add_argument("--json", action="store_true", help="one JSON object")
    count.set_defaults(func=cmd_count)

    code = sub.add_parser(
        "codehash", help="hash of the code a model × method × task run depends on"
    )
    code.add_argument("--model", required=True)
    code.add_argument("--method", required=True)
    code.add_argument("--task", required=True)
    code.set_defaults(func=cmd_codehash)

    check = sub.add_parser("verify", help="check a results folder's records and leaderboard")
    check.add_argument("results_dir", help="the sweep's results folder (e.g. results)")
    check.set_defaults(func=cmd_verify)
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
