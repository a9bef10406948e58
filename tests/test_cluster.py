"""The sweep on SLURM through snakemake-executor-plugin-slurm and profiles/slurm, against a fake
``sbatch``/``srun``/``sacct``/``squeue``/``scancel``/``sinfo`` on ``PATH``: small scripts that run
each job locally at submission and record what was submitted. Only what one CPU node cannot
show lives here (GPU requests, a cluster that has GPUs); everything else runs on a real SLURM
cluster in tests/test_slurm.py."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from peftbench.planning.cluster import slurm_gpu_problem
from peftbench.planning.sweep import plan_sweep
from tests.conftest import REPO, run_snakemake

FAKE_SLURM = '''
"""Fake SLURM commands (this file's name says which): jobs run at submission."""
import json
import os
import subprocess
import sys
from pathlib import Path

STATE = Path(os.environ["FAKE_SLURM_STATE"])
command, args = Path(sys.argv[0]).name, sys.argv[1:]


def value(flag):
    return args[args.index(flag) + 1]


if command == "sbatch":
    STATE.mkdir(parents=True, exist_ok=True)
    jobid = str(1000 + len(list(STATE.glob("*.json"))))
    (STATE / f"{jobid}.json").write_text(json.dumps(args))
    wrapped = next(a.removeprefix("--wrap=") for a in args if a.startswith("--wrap="))
    log = Path(value("--output").replace("%j", jobid))
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        done = subprocess.run(
            wrapped, shell=True, cwd=value("-D"), stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "SLURM_JOB_ID": jobid},
        )
    (STATE / f"{jobid}.state").write_text("COMPLETED" if done.returncode == 0 else "FAILED")
    print(jobid)
elif command == "srun":  # run the step's command, dropping srun's own options
    while args and args[0].startswith("-"):
        args.pop(0)
    os.execvp(args[0], args)
elif command == "sacct":  # status queries: "<job id>|<state>" per job
    if "--format=JobIdRaw,State" in args:
        for state in sorted(STATE.glob("*.state")):
            print(f"{state.stem}|{state.read_text()}")
elif command == "squeue":
    for state in sorted(STATE.glob("*.state")):
        print(f"{state.stem}|{state.read_text()}")
elif command == "sinfo":  # the GPUs of each node group (%G), else the default partition
    if "%G" in args:
        print(os.environ.get("FAKE_SLURM_GRES", "gpu:2"))
    else:
        print("PARTITION\\ndebug*")
'''
COMMANDS = ("sbatch", "srun", "sacct", "squeue", "scancel", "sinfo")


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """Fake SLURM commands first on PATH; returns the folder of submitted jobs."""
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm-jobs"
    bin_dir.mkdir()
    script = bin_dir / "fake_slurm.py"
    script.write_text(f"#!{sys.executable}\n{FAKE_SLURM}")
    for command in COMMANDS:
        (bin_dir / command).symlink_to(script)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_STATE", str(state))
    return state


def submitted(state: Path) -> list[list[str]]:
    """sbatch arguments of every submission in order, --wrap left out."""
    paths = sorted(state.glob("*.json"), key=lambda path: int(path.stem))
    return [[a for a in json.loads(p.read_text()) if not a.startswith("--wrap=")] for p in paths]


def submissions(state: Path) -> dict[str, list[str]]:
    """sbatch arguments by job (``rule_<rule>_wildcards_<...>`` comment), --wrap left out."""
    found = {}
    for path in sorted(state.glob("*.json")):
        args = [a for a in json.loads(path.read_text()) if not a.startswith("--wrap=")]
        found[args[args.index("--comment") + 1]] = args
    return found


def option(args: list[str], flag: str) -> str | None:
    """The value of ``flag`` in sbatch arguments (``--flag value`` or ``--flag=value``)."""
    for i, arg in enumerate(args):
        if arg == flag:
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def write_cluster_config(folder: Path) -> dict:
    """One LoRA run on minilm-l2 at a tiny budget, written to ``folder/config.yaml``."""
    config = {
        "models": ["minilm-l2"],
        "methods": ["lora"],
        "tasks": ["docstring-match"],
        "seeds": [0],
        "budget": {"steps": 2, "batch_size": 4, "max_length": 16},
        "hparams": {"max_eval_examples": 16},
        "count_models": [],
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return config


@pytest.mark.slow(seconds=110)
def test_sweep_on_slurm_submits_sized_jobs(fake_slurm, tmp_path):
    """The jobs ask SLURM for what the run needs; the fake runs them here, where torch sees no
    GPU, so the run that asked for one fails loudly, with no record."""
    config = write_cluster_config(tmp_path)
    result = run_snakemake(
        tmp_path,
        "--profile",
        str(REPO / "profiles" / "slurm"),
        "--configfile",
        str(tmp_path / "config.yaml"),
        "--config",
        "gpus_per_run=1",
        "threads_per_run=1",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--seconds-between-status-checks",
        "1",
        "--retries",  # the profile's retry would fail the same way (tests/test_slurm.py retries)
        "0",
        check=False,
    )
    jobs = submissions(fake_slurm)
    # Tokenization and the run are cluster jobs; aggregation and reports run locally.
    run = "rule_run_wildcards_minilm-l2_lora_docstring-match_default_0"
    tokenize = "rule_tokenize_wildcards_minilm_docstring-match_16"
    assert set(jobs) == {tokenize, run}

    assert [option(args, "--comment") for args in submitted(fake_slurm)].count(run) == 1
    sweep = plan_sweep({**config, "gpus_per_run": 1})
    expected = sweep.resources("minilm-l2", "lora", "docstring-match")
    assert option(jobs[run], "--mem") == str(expected.mem_mb)
    assert option(jobs[run], "-t") == str(expected.runtime_min)
    assert option(jobs[run], "--gpus") == "1"
    assert option(jobs[run], "--cpus-per-task") == "1"
    assert option(jobs[run], "-p") == "debug"  # the default partition sinfo reported
    assert option(jobs[tokenize], "--mem") == "4000" and option(jobs[tokenize], "--gpus") is None
    assert result.returncode != 0
    log = tmp_path / "results/logs/runs/minilm-l2/lora/docstring-match/default/seed0.log"
    assert "gpus=1 but torch sees no CUDA device" in log.read_text()
    run_folder = tmp_path / "results/runs/minilm-l2/lora/docstring-match/default/seed0"
    assert (run_folder / "spec.json").is_file() and not (run_folder / "result.json").exists()


@pytest.mark.parametrize(
    ("gres", "gpus", "problem"),
    [
        ("(null)", 1, "gpus_per_run=1 but the cluster's nodes have no GPU (sinfo -h -o %G: "
                      "(null)); set gpus_per_run: 0 in your config file"),
        ("gpu:2,mps:200\n(null)", 4, "gpus_per_run=4 but no node of the cluster has more than 2 "
                                       "GPUs (sinfo -h -o %G: (null), gpu:2,mps:200); set "
                                       "gpus_per_run to at most 2 in your config file"),
        ("gpu:a100:4(S:0-1)\n(null)", 4, None),
        ("(null)", 0, None),  # a CPU sweep does not ask
    ],
)  # fmt: skip
def test_gpus_asked_of_a_cluster_that_lacks_them_are_refused_naming_the_setting(
    fake_slurm, monkeypatch, gres, gpus, problem
):
    """What the Snakefile checks before submitting anything under the SLURM executor
    (tests/test_slurm.py sees the whole sweep refused on a real cluster without GPUs)."""
    monkeypatch.setenv("FAKE_SLURM_GRES", gres)
    assert slurm_gpu_problem(gpus) == problem


def test_the_gpu_check_leaves_it_to_sbatch_when_sinfo_cannot_answer(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sinfo
    assert slurm_gpu_problem(1) is None


def test_resources_grow_with_model_size_and_method():
    """On the meta device (no weights): a bigger model and full fine-tuning ask for more."""
    from peftbench.planning.sweep import estimate_resources, footprint

    hp = {
        "steps": 100,
        "batch_size": 16,
        "max_length": 64,
        "precision": "fp32",
        "max_eval_examples": 0,
        "lr": 1e-4,
    }
    sizes = {
        (model, method): footprint(model, method, "docstring-match", hp)
        for model in ("minilm-l2", "minilm-l6")
        for method in ("full", "bitfit")
    }
    small, large = sizes["minilm-l2", "full"], sizes["minilm-l6", "full"]
    assert large.matmul_params > small.matmul_params and large.num_layers == 6
    # Full fine-tuning: weights, gradients and two AdamW moments (buffers are not trained).
    assert 3.9 * small.weights_bytes < small.training_state_bytes < 4 * small.weights_bytes
    bitfit = sizes["minilm-l2", "bitfit"]
    assert bitfit.weights_bytes == small.weights_bytes
    assert bitfit.trainable_params < small.trainable_params / 100

    cpu = {key: estimate_resources(size, hp, gpus=0, threads=1) for key, size in sizes.items()}
    assert cpu["minilm-l6", "full"].mem_mb > cpu["minilm-l2", "full"].mem_mb
    assert cpu["minilm-l2", "full"].mem_mb > cpu["minilm-l2", "bitfit"].mem_mb
    assert cpu["minilm-l6", "full"].runtime_min > cpu["minilm-l2", "full"].runtime_min
    # On a GPU, host memory holds the checkpoint (not the training state); time still follows
    # the method's FLOPs once the budget is large enough to leave the 10-minute floor.
    gpu = {
        key: estimate_resources(size, {**hp, "steps": 10**6}, gpus=1, threads=1)
        for key, size in sizes.items()
    }
    assert gpu["minilm-l2", "full"].gpus == 1
    assert gpu["minilm-l2", "full"].mem_mb == gpu["minilm-l2", "bitfit"].mem_mb
    assert gpu["minilm-l2", "full"].runtime_min > gpu["minilm-l2", "bitfit"].runtime_min
    assert gpu["minilm-l6", "full"].runtime_min > gpu["minilm-l2", "full"].runtime_min
