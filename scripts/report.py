"""Rule ``report`` (rules/report.smk): results/leaderboard.csv -> leaderboards, plots, tables."""

import os
from contextlib import redirect_stderr

from snakemake.script import Snakemake

from peftbench.reporting.report import write_reports


def main(job: Snakemake) -> None:
    with open(job.log[0], "w") as log, redirect_stderr(log):
        write_reports(
            job.input[0],
            job.output.markdown,
            job.output.html,
            plots_dir=os.path.dirname(job.output.plots[0]),
            tables_dir=os.path.dirname(job.output.overall),
            docs=job.params.docs,
        )


main(snakemake)  # noqa: F821 (the script directive defines `snakemake`)
