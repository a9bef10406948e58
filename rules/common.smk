# Sweep planning: the crossed run list, checked in full before any job starts.
import json
import shlex
import sys
from pathlib import Path

from snakemake_interface_executor_plugins.settings import DeploymentMethod

from peftbench.cli.console import quiet_library_notices
from peftbench.plugin.registry import MODELS
from peftbench.planning.spec import RUN_PATTERN, SPEC_FILE, RunSpec, write_spec
from peftbench.planning.sweep import plan_sweep

# Jobs run this Python (the one running Snakemake), or under --software-deployment-method conda
# the job environment's (envs/peftbench.yaml), into which its post-deploy script installs the
# checkout named here.
CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
PYTHON = "python" if CONDA else shlex.quote(sys.executable)
os.environ.update(PEFTBENCH_SOURCE=workflow.basedir)
RESULTS = config["results_dir"]
REPORTS = config["reports_dir"]
quiet_library_notices()  # planning imports transformers, peft and bitsandbytes
SWEEP = plan_sweep(config)  # raises with the bad value and the valid choices


wildcard_constraints:
    model="[^/]+",
    method="[^/]+",
    setting="[^/]+",
    seed=r"\d+",
    tokenizer="[^/]+",
    max_length=r"\d+",


# Cheap bookkeeping runs on the machine running Snakemake, never as a cluster job.
localrules:
    spec,
    aggregate,
    report,
    param_counts,


# One folder per run: its spec.json (the contract), then its result.json.
RUN = f"{RESULTS}/runs/{RUN_PATTERN}"


def tokenized_dir(model, task):
    key = MODELS.get(model).tokenizer_key
    return f"{RESULTS}/cache/tokenized/{key}/{task}/len{config['budget']['max_length']}"


def write_run_spec(spec_file, log_file, spec_json):
    """Rule spec's job, in a thread of the Snakemake process (profiles/default): the planned
    run's resolved spec, as ``spec_file`` (atomically); the log names what was written."""
    path = write_spec(Path(spec_file).parent, RunSpec.from_dict(json.loads(spec_json)))
    Path(log_file).write_text(f"{path}\n")


ALL_RECORDS = [f"{RESULTS}/runs/{spec.run_id}/result.json" for spec in SWEEP.specs]
