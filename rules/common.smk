# Sweep planning: the crossed run list, checked in full before any job starts.
import shlex
import sys

from peftbench.registry import MODELS
from peftbench.sweep import plan_sweep

PYTHON = shlex.quote(sys.executable)
RESULTS = config["results_dir"]
REPORTS = config["reports_dir"]
SWEEP = plan_sweep(config)  # raises with the bad value and the valid choices


wildcard_constraints:
    model="[^/]+",
    method="[^/]+",
    setting="[^/]+",
    seed=r"\d+",
    tokenizer="[^/]+",
    max_length=r"\d+",


# Cheap bookkeeping runs in the main Snakemake process, never as a cluster job.
localrules:
    aggregate,
    report,
    param_counts,


def run_dir(spec):
    return f"{RESULTS}/runs/{spec.run_id}"


def tokenized_dir(model, task):
    key = MODELS.get(model).tokenizer_key
    return f"{RESULTS}/cache/tokenized/{key}/{task}/len{config['budget']['max_length']}"


ALL_RECORDS = [run_dir(spec) + "/result.json" for spec in SWEEP.specs]
