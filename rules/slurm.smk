# Two workarounds for the SLURM executor (profiles/slurm, docs/cluster.md), both tested on a real
# cluster by tests/test_slurm.py; drop each once Snakemake or its SLURM plugin does it itself.
import os
import signal
import sys

from snakemake_interface_executor_plugins.settings import ExecMode

# 1. In the Snakemake that submits the jobs. snakemake-executor-plugin-slurm (2.8.0, the newest
# release) reads job states from `sacct -X --parsable2 -o JobIdRaw,State` and compares them with
# "CANCELLED"; sacct writes a job someone cancelled (`scancel <id>`) as "CANCELLED by <uid>",
# which the plugin takes for a job still running: the sweep would wait for it forever instead of
# rerunning it. The " by <uid>" is cut before the plugin reads the states.
_slurm_plugin = sys.modules.get("snakemake_executor_plugin_slurm")
if _slurm_plugin is not None and not hasattr(_slurm_plugin, "_peftbench_states_cut"):
    _read_states = _slurm_plugin.query_job_status

    async def _states_without_by(command, logger):
        states, seconds = await _read_states(command, logger)
        if states is not None:
            states = {job: state.split(" by ", 1)[0] for job, state in states.items()}
        return states, seconds

    _slurm_plugin.query_job_status = _states_without_by
    _slurm_plugin._peftbench_states_cut = True

# 2. In the Snakemake inside each job. SLURM's SIGTERM (scancel, scontrol requeue, preemption,
# the time limit, the profile's --signal) reaches only a job step's tasks, the direct children
# of slurmstepd (proctrack/cgroup passes SIGKILL alone to their children). That task is the
# job's own Snakemake, which on SIGTERM waits for its running job and passes nothing on, so the
# run would be killed KillWait later without the checkpoint it writes on SIGTERM. Pass SIGTERM
# on to the job's shell process (the run itself: rules/run.smk execs it), then wait as before.
if os.environ.get("SLURM_JOB_ID") and workflow.exec_mode != ExecMode.DEFAULT:
    from snakemake.scheduling.job_scheduler import JobScheduler
    from snakemake.shell import shell

    _wait_for_running_jobs = JobScheduler.exit_gracefully

    def _pass_sigterm_on(self, *args):
        with shell._lock:
            running = list(shell._processes.values())
        for process in running:
            process.send_signal(signal.SIGTERM)
        _wait_for_running_jobs(self, *args)

    JobScheduler.exit_gracefully = _pass_sigterm_on
