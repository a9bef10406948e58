"""Rule ``spec`` (rules/run.smk): the planned run, resolved once, -> its folder's spec.json."""

import json
from contextlib import redirect_stderr
from pathlib import Path

from snakemake.script import Snakemake

from peftbench.planning.spec import RunSpec, write_spec


def main(job: Snakemake) -> None:
    with open(job.log[0], "w") as log, redirect_stderr(log):
        spec = RunSpec.from_dict(json.loads(job.params.spec))
        write_spec(Path(job.output[0]).parent, spec)


main(snakemake)  # noqa: F821 (the script directive defines `snakemake`)
