"""Sweeps on a real SLURM cluster: `snakemake --profile profiles/slurm`, as a user runs it, on the
single-node cluster `.ci/slurm-up` brings up (accounting, memory cgroups), with what SLURM does to
jobs (memory and time limits, scancel, requeue) read back from ``sacct``.

Marked ``slurm`` and deselected by default (pyproject's addopts): run them with
``python -m pytest -q -m slurm`` (`.ci/run` does, after the README's commands). Without a cluster
they skip, naming what is missing; under ``CI=true`` they fail instead.

Two sweeps share one folder (and its tokenized data). The first runs four runs at once: LoRA,
which must simply finish; one that holds memory past its job's ``--mem``; one the test cancels
with ``scancel`` while it trains; one the test requeues with ``scontrol requeue`` while it trains.
The second runs one run that outlasts a one-minute time limit. The three runs besides LoRA are
test-only methods (a plugin on ``PYTHONPATH``, as in tests/test_faults.py): head-only training
whose training passes sleep, so that SLURM catches them mid-training.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from peftbench.planning.sweep import plan_sweep
from peftbench.records.record import read_record
from tests.conftest import IN_CI, REPO
from tests.test_faults import PLUGIN_PACKAGE, on_pythonpath, write_plugin

pytestmark = pytest.mark.slurm

PACED_METHODS = '''
"""Test-only methods for tests/test_slurm.py: the task head trains, nothing else."""
import os
import time
from pathlib import Path

import numpy as np

from peftbench import register_method
from peftbench.plugin.method import Method, learning_rate


class Paced(Method):
    """Each training forward pass sleeps ``pause`` seconds; the ``mark_at``-th writes
    ``$PBSLURM_MARKERS/<method>.<SLURM_JOB_ID>`` (the test acts on a job once it trains). From
    the first on, holds ``ballast_mb`` MB, every page written (not in ``apply``: planning applies
    the method to a meta-device model in every Snakemake process)."""

    description = "test: head-only training at a set pace"
    hyperparameters = {"lr": learning_rate(1e-3)}
    pause = 1.0
    mark_at = {mark_at}
    ballast_mb = 0

    def apply(self, model, hp, info):
        passes = []

        def pace(module, args):
            if module.training:
                passes.append(np.ones(self.ballast_mb * 2**20 if not passes else 0, np.uint8))
                if len(passes) == self.mark_at:
                    folder = Path(os.environ["PBSLURM_MARKERS"])
                    (folder / f"{self.name}.{os.environ['SLURM_JOB_ID']}").write_text("")
                time.sleep(self.pause)

        model.register_forward_pre_hook(pace)
        return model.requires_grad_(False)


@register_method("slurm-oom")
class HoldsMemory(Paced):
    pause = 0.0
    ballast_mb = 1000


@register_method("slurm-cancel")
class Cancelled(Paced):
    pass


@register_method("slurm-requeue")
class Requeued(Paced):
    pass


@register_method("slurm-timeout")
class Slow(Paced):
    pass
'''
MARK_AT = 3
"""The training pass at which a paced run writes its marker."""
SCENARIOS = ("slurm-oom", "slurm-cancel", "slurm-requeue", "slurm-timeout")
RUN = "results/runs/minilm-l2/{method}/docstring-match/default/seed0"
BASE = {
    "models": ["minilm-l2"],
    "tasks": ["docstring-match"],
    "seeds": [0],
    "budget": {"steps": 3, "batch_size": 4, "max_length": 16},
    "hparams": {"max_eval_examples": 16},
    "count_models": [],
    "gpus_per_run": 0,  # the point of the config file: the profile no longer overrides it
    "threads_per_run": 1,
}
FIRST = {
    **BASE,
    "methods": ["lora", "slurm-oom", "slurm-cancel", "slurm-requeue"],
    "method_hparams": {"lora": {"lr": 5e-3}, "slurm-cancel": {"steps": 20},
                       "slurm-requeue": {"steps": 20}},
}  # fmt: skip
SECOND = {**BASE, "methods": ["slurm-timeout"], "method_hparams": {"slurm-timeout": {"steps": 100}}}
# One minute for the first attempt (a TIMEOUT 60-90 s after it starts), ten for the retry: a
# --set-resources value replaces the rule's own attempt-scaled estimate, so it says how to scale.
TIMEOUT_RESOURCES = "run:runtime=1 if attempt == 1 else 10"
STATUS_CHECKS = ("--slurm-init-seconds-before-status-checks", "5")
SWEEP_LIMIT_S = 25 * 60


def slurm_problem() -> str | None:
    """Why no SLURM cluster can take jobs here, or ``None``."""
    answers = []
    for command in (["sinfo", "-h", "-o", "%T"], ["sacct", "-n", "-X", "-S", "now"]):
        try:
            answer = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"`{' '.join(command)}`: {error}"
        if answer.returncode:
            return f"`{' '.join(command)}` failed: {answer.stderr.strip()[-400:]}"
        answers.append(answer.stdout)
    states = answers[0].split()
    if not {"idle", "mixed", "allocated", "completing"} & set(states):
        return f"no SLURM node can take jobs (sinfo: {' '.join(states) or 'no nodes'})"
    return None


@pytest.fixture(scope="module")
def slurm() -> None:
    problem = slurm_problem()
    if problem:
        reason = f"no SLURM cluster ({problem}); bring one up with `sudo .ci/slurm-up`"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)


@dataclass
class Sweep:
    folder: Path
    since: str
    """When it started, for sacct -S."""
    returncode: int
    output: str
    acted: dict[str, str]
    """Job ids the test cancelled or requeued, by method."""

    def check(self) -> None:
        assert self.returncode == 0, f"sweep failed:\n{self.output[-6000:]}"

    def record(self, method: str) -> dict:
        return read_record(self.folder / RUN.format(method=method) / "result.json")

    def jobs(self, method: str) -> list[dict[str, str]]:
        """Every SLURM job of ``method``'s run, in submission order, each incarnation of a
        requeued one included."""
        comment = f"rule_run_wildcards_minilm-l2_{method}_docstring-match_default_0"
        return [job for job in accounting(self.folder, self.since) if job["comment"] == comment]


def accounting(folder: Path, since: str) -> list[dict[str, str]]:
    """``sacct`` on the jobs submitted from ``folder`` since ``since`` (``-D``: a requeued job
    once per start)."""
    fields = ["JobIDRaw", "State", "ReqMem", "TimelimitRaw", "AllocTRES", "WorkDir", "SubmitLine"]
    answer = subprocess.run(
        ["sacct", "-X", "-D", "--parsable2", "--noheader", "-S", since, "-o", ",".join(fields)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    jobs = []
    for line in answer.stdout.splitlines():
        job = dict(zip(fields, line.split("|", len(fields) - 1), strict=True))
        if job["WorkDir"] == str(folder):
            job["State"] = job["State"].split()[0]  # "CANCELLED by 0"
            found = re.search(r"--comment (\S+)", job["SubmitLine"])
            job["comment"] = found.group(1) if found else ""
            jobs.append(job)
    return jobs


def step_states(job: str) -> dict[str, str]:
    """The state of each step of ``job`` (``batch``, ``0``, ...), from sacct."""
    answer = subprocess.run(
        ["sacct", "-j", job, "--parsable2", "--noheader", "-o", "JobIDRaw,State"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    states = (line.split("|") for line in answer.stdout.splitlines())
    return {step.partition(".")[2]: state.split()[0] for step, state in states if "." in step}


def run_sweep(
    folder: Path, config: dict, *args: str, act: dict[str, Callable[[str], object]]
) -> Sweep:
    """``snakemake --profile profiles/slurm`` on ``config`` in ``folder`` under umask 022; once a
    method in ``act`` writes its marker (it trains), ``act[method](job id)``, once."""
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    markers = folder / "markers"
    markers.mkdir(exist_ok=True)
    since = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    command = [
        sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
        str(folder), "--profile", str(REPO / "profiles" / "slurm"), "--configfile",
        str(folder / "config.yaml"), *STATUS_CHECKS, *args,
    ]  # fmt: skip
    log = folder / f"snakemake-{len(list(folder.glob('snakemake-*.log')))}.log"
    env = {**os.environ, "PBSLURM_MARKERS": str(markers)}
    acted: dict[str, str] = {}
    with log.open("w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, umask=0o022
        )
        deadline = time.monotonic() + SWEEP_LIMIT_S
        while process.poll() is None:
            for marker in markers.iterdir():
                method, job = marker.name.split(".")
                if method in act and method not in acted:
                    acted[method] = job
                    act[method](job)
            if time.monotonic() > deadline:
                process.send_signal(2)  # SIGINT: Snakemake cancels its jobs (scancel)
                process.wait(timeout=120)
                pytest.fail(f"the sweep took over {SWEEP_LIMIT_S} s:\n{log.read_text()[-6000:]}")
            time.sleep(1)
    return Sweep(folder, since, process.returncode, log.read_text(), acted)


def slurm_command(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, slurm) -> Iterator[Path]:
    root = write_plugin(
        tmp_path_factory.mktemp("plugins"),
        {"paced": PACED_METHODS.replace("{mark_at}", str(MARK_AT))},
        {"peftbench.methods": {name: f"{PLUGIN_PACKAGE}.paced" for name in SCENARIOS}},
    )
    with pytest.MonkeyPatch.context() as patch:
        on_pythonpath(patch, root)
        yield tmp_path_factory.mktemp("slurm-sweep")


@pytest.fixture(scope="module")
def first(folder) -> Sweep:
    """LoRA, a run over its memory, one cancelled and one requeued while they train."""
    return run_sweep(
        folder,
        FIRST,
        act={
            "slurm-cancel": lambda job: slurm_command("scancel", job),
            "slurm-requeue": lambda job: slurm_command("scontrol", "requeue", job),
        },
    )


@pytest.fixture(scope="module")
def second(folder, first) -> Sweep:
    """After the first (its tokenized data ready): one run over a one-minute limit."""
    return run_sweep(folder, SECOND, "--set-resources", TIMEOUT_RESOURCES, act={})


def test_runs_finish_as_sbatch_jobs_sized_by_the_plan(first):
    first.check()
    assert "4 runs: 4 ok" in first.output
    for method in FIRST["methods"]:
        assert first.record(method)["status"]["code"] == "ok", method
    lora_only = {**BASE, "methods": ["lora"], "method_hparams": {"lora": {"lr": 5e-3}}}
    expected = plan_sweep(lora_only).resources("minilm-l2", "lora", "docstring-match")
    (job,) = first.jobs("lora")
    assert job["State"] == "COMPLETED"
    assert job["ReqMem"] == f"{expected.mem_mb}M" and job["TimelimitRaw"] == str(
        expected.runtime_min
    )
    assert "gpu" not in job["AllocTRES"] and "--gpus" not in job["SubmitLine"]
    # The profile's requeue and early-warning signal reach sbatch.
    assert " --requeue " in job["SubmitLine"] and " --signal=TERM@120 " in job["SubmitLine"]
    (tokenize,) = [j for j in accounting(first.folder, first.since) if "tokenize" in j["comment"]]
    assert (tokenize["State"], tokenize["ReqMem"]) == ("COMPLETED", "4000M")


def test_a_record_written_by_a_slurm_job_is_readable_by_group_and_others(first):
    first.check()
    run = first.folder / RUN.format(method="lora")
    for path in (run / "result.json", run / "predictions.json", run):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))


def test_a_job_killed_for_memory_reruns_with_twice_the_memory_and_time(first):
    first.check()
    killed, retry = first.jobs("slurm-oom")
    # The kernel killed the run in the job's step (the cgroup's OOM killer takes the largest
    # process); the job's own Snakemake then exited 1, so the job as a whole is FAILED.
    assert step_states(killed["JobIDRaw"])["0"] == "OUT_OF_MEMORY"
    assert (killed["State"], retry["State"]) == ("FAILED", "COMPLETED")
    # The rule's own estimate, times `attempt` (rules/run.smk).
    assert int(retry["ReqMem"].rstrip("M")) == 2 * int(killed["ReqMem"].rstrip("M"))
    assert int(retry["TimelimitRaw"]) == 2 * int(killed["TimelimitRaw"])
    assert "--attempt 1 " in killed["SubmitLine"] and "--attempt 2 " in retry["SubmitLine"]


def test_a_cancelled_job_reruns_and_resumes_from_its_checkpoint(first):
    """scancel: SIGTERM, then SIGKILL after KillWait. The run checkpoints on SIGTERM; Snakemake
    resubmits the cancelled job (retries: 1) and the new job resumes."""
    first.check()
    cancelled, retry = first.jobs("slurm-cancel")
    assert cancelled["JobIDRaw"] == first.acted["slurm-cancel"]
    assert (cancelled["State"], retry["State"]) == ("CANCELLED", "COMPLETED")
    resume = first.record("slurm-cancel")["resume"]
    assert resume["resumed"] and resume["from_step"] >= MARK_AT, resume


def test_a_requeued_job_resumes_from_its_checkpoint(first):
    """scontrol requeue (as preemption with PreemptMode=REQUEUE): SIGTERM, the job goes back to
    the queue under the same id and starts again; the run resumes where it checkpointed."""
    first.check()
    job = first.acted["slurm-requeue"]
    starts = first.jobs("slurm-requeue")
    assert [(j["JobIDRaw"], j["State"]) for j in starts] == [
        (job, "REQUEUED"),
        (job, "COMPLETED"),
    ]
    resume = first.record("slurm-requeue")["resume"]
    assert resume["resumed"] and resume["from_step"] >= MARK_AT, resume


def test_a_job_over_its_time_limit_reruns_with_more_time(second):
    second.check()
    assert second.record("slurm-timeout")["status"]["code"] == "ok"
    timed_out, retry = second.jobs("slurm-timeout")
    assert (timed_out["State"], timed_out["TimelimitRaw"]) == ("TIMEOUT", "1")
    assert (retry["State"], retry["TimelimitRaw"]) == ("COMPLETED", "10")


def test_a_gpu_sweep_on_a_cluster_without_gpus_is_refused_before_submitting(slurm, tmp_path):
    """This cluster's node has no GPU: gpus_per_run: 1 in the config file is refused, naming the
    setting, and nothing reaches the queue."""
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**BASE, "gpus_per_run": 1,
                                                          "methods": ["lora"]}))  # fmt: skip
    since = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
         str(tmp_path), "--profile", str(REPO / "profiles" / "slurm"), "--configfile",
         str(tmp_path / "config.yaml")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode != 0
    assert "gpus_per_run=1 but the cluster's nodes have no GPU" in result.stdout + result.stderr
    assert "set gpus_per_run: 0 in your config file" in result.stdout + result.stderr
    assert accounting(tmp_path, since) == []
