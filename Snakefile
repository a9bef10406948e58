# peftbench: models × methods × tasks × seeds, from tokenization to leaderboards.
#   snakemake --cores 2                   # the default sweep (config/config.yaml)
#   snakemake -n                          # show the DAG without running it
#   snakemake --profile profiles/slurm    # the same sweep on a SLURM cluster
import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

from peftbench.planning.cluster import slurm_gpu_problem
from peftbench.reporting.summary import MISSING, status_counts, summary_line

min_version("8.20")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


validate(config, os.path.join(workflow.basedir, "config", "config.schema.yaml"))


include: "rules/common.smk"
include: "rules/convert.smk"
include: "rules/tokenize.smk"
include: "rules/run.smk"
include: "rules/report.smk"
include: "rules/params.smk"
include: "rules/slurm.smk"


rule all:
    input:
        f"{REPORTS}/leaderboard.md",
        f"{REPORTS}/leaderboard.html",
        f"{REPORTS}/param_counts.md",


# Before anything is submitted (the executor is known only now, not while the workflow is read):
# runs asking for GPUs on a SLURM cluster without any would each be refused by sbatch.
onstart:
    if workflow.executor_plugin.name == "slurm":
        problem = slurm_gpu_problem(config["gpus_per_run"])
        if problem:
            raise WorkflowError(problem)


# Every sweep ends with one line of run statuses. It fails when runs ended and none finished
# (a target that needs no run, such as a tokenization, has no records and does not fail).
onsuccess:
    counts = status_counts(ALL_RECORDS)
    print(summary_line(counts, f"{REPORTS}/leaderboard.md"))
    ended = counts.total() - counts[MISSING]
    if ended and not counts["ok"]:
        raise WorkflowError(
            f"no run finished: {ended} recorded, none with status ok; each record's"
            f" status.message says why ({RESULTS}/runs/)"
        )


onerror:
    print(summary_line(status_counts(ALL_RECORDS), f"the failed jobs' logs in {RESULTS}/logs/"))
