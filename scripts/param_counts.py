"""Rule ``param_counts`` (rules/params.smk): paper-scale models × methods, counted on the meta
device -> reports/param_counts.md."""

from contextlib import redirect_stderr

from snakemake.script import Snakemake

from peftbench.reporting.param_table import write_param_table


def main(job: Snakemake) -> None:
    with open(job.log[0], "w") as log, redirect_stderr(log):
        write_param_table(job.output[0], job.params.models, job.params.methods)


main(snakemake)  # noqa: F821 (the script directive defines `snakemake`)
