"""Rule ``aggregate`` (rules/report.smk): the sweep's records -> results/leaderboard.csv."""

from contextlib import redirect_stderr

from snakemake.script import Snakemake

from peftbench.reporting.aggregate import collect, write_table


def main(job: Snakemake) -> None:
    with open(job.log[0], "w") as log, redirect_stderr(log):
        write_table(collect(job.input), job.output[0])


main(snakemake)  # noqa: F821 (the script directive defines `snakemake`)
