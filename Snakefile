# peftbench: models × methods × tasks × seeds, from tokenization to leaderboards.
#   snakemake --cores 2                   # the default sweep (config/config.yaml)
#   snakemake -n                          # show the DAG without running it
#   snakemake --profile profiles/slurm    # the same sweep on a SLURM cluster
import os

from snakemake.utils import min_version, validate

min_version("8.20")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


validate(config, os.path.join(workflow.basedir, "config", "config.schema.yaml"))


include: "rules/common.smk"
include: "rules/tokenize.smk"
include: "rules/run.smk"
include: "rules/report.smk"
include: "rules/params.smk"


rule all:
    input:
        f"{REPORTS}/leaderboard.md",
        f"{REPORTS}/leaderboard.html",
        f"{REPORTS}/param_counts.md",
