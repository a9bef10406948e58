"""The model × method table of parameter counts (``reports/param_counts.md``).

    python -m peftbench.reporting.param_table reports/param_counts.md \\
        --models roberta-base llama-2-7b --methods full bitfit lora [--set r=16]

Counts come from :func:`peftbench.planning.counting.count_model_method` (meta device: no weights, no
network). A ``--set KEY=VALUE`` applies to every listed method that has ``KEY``; combinations a
method does not support are listed with the reason.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from peftbench.planning.counting import NotApplicableError, count_model_method
from peftbench.planning.spec import SpecError, parse_assignments
from peftbench.plugin.registry import METHODS
from peftbench.records.files import write_text_atomic

COLUMNS = ("model", "method", "base", "trainable (method)", "head", "stored", "inference added")


def method_overrides(methods: list[str], overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each method's share of ``overrides``; a key no listed method has is an error."""
    per_method = {
        m: {k: v for k, v in overrides.items() if k in METHODS.get(m).defaults} for m in methods
    }
    used = {key for shares in per_method.values() for key in shares}
    unknown = sorted(set(overrides) - used)
    if unknown:
        valid = sorted({key for m in methods for key in METHODS.get(m).defaults})
        raise SpecError(f"unknown hyperparameter(s) {unknown}; valid: {', '.join(valid)}")
    return per_method


def row(model: str, method: str, overrides: dict[str, Any], num_labels: int) -> list[str]:
    try:
        c = count_model_method(model, method, overrides, num_labels)
    except NotApplicableError as error:
        return [model, method, "n/a", str(error), "", "", ""]
    except Exception as error:  # one broken combination must not hide the rest of the table
        return [model, method, "error", f"{type(error).__name__}: {error}", "", "", ""]
    return [
        model,
        method,
        f"{c['base_total']:,}",
        with_pct(c["trainable_method"], c["trainable_method_pct"]),
        f"{c['trainable_head']:,}",
        f"{with_pct(c['stored'], c['stored_pct'])}, {size(c['stored_bytes'])}",
        with_pct(c["inference_added"], c["inference_added_pct"]),
    ]


def with_pct(count: int, pct: float) -> str:
    return f"{count:,} ({pct:.3g}%)"


def size(n_bytes: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n_bytes < 1024:
            return f"{n_bytes:.3g} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.3g} GiB"


def param_table(
    models: list[str],
    methods: list[str],
    overrides: dict[str, Any] | None = None,
    num_labels: int = 2,
) -> str:
    """The table as Markdown."""
    shares = method_overrides(methods, overrides or {})
    lines = [
        "# Parameter counts",
        "",
        "Definitions: docs/parameters.md. Elements, with percentages of the base (the",
        f"pretrained model without its head); a {num_labels}-label head; method defaults"
        + (f" with {overrides}." if overrides else "."),
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for model in models:
        for method in methods:
            lines.append("| " + " | ".join(row(model, method, shares[method], num_labels)) + " |")
    return "\n".join(lines) + "\n"


def write_param_table(path: str | Path, models: list[str], methods: list[str], **kwargs) -> None:
    write_text_atomic(path, param_table(models, methods, **kwargs))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m peftbench.reporting.param_table", description=__doc__
    )
    parser.add_argument("out", help="Markdown file to write")
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--methods", nargs="+", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--num-labels", type=int, default=2)
    args = parser.parse_args(argv)
    write_param_table(
        args.out,
        args.models,
        args.methods,
        overrides=parse_assignments(args.set),
        num_labels=args.num_labels,
    )


if __name__ == "__main__":
    main()
