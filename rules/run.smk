# One job per model × method × task × grid setting × seed. Planning resolved every run once
# (harness/peftbench/planning/sweep.py); rule spec writes it down as the run's spec.json, the only input of the
# run besides its tokenized data. Each run writes exactly one result record, atomically: a job
# killed mid-way leaves no result.json, so the next invocation reruns it.


# In a thread of the Snakemake process, which planned the spec already (a `run:` block and
# profiles/default's force-use-threads: no process started per run; and no conda environment,
# which only scripts and shell commands take).
rule spec:
    output:
        f"{RUN}/{SPEC_FILE}",
    log:
        f"{RESULTS}/logs/specs/{RUN_PATTERN}.log",
    params:
        # The resolved spec itself: a changed value (config, defaults) rewrites the file, which
        # reruns the run.
        spec=lambda w: SWEEP.spec_json(**w),
    run:
        write_run_spec(output[0], log[0], params.spec)


rule run:
    input:
        spec=f"{RUN}/{SPEC_FILE}",
        tokenized=lambda w: tokenized_dir(w.model, w.task),
        converted=lambda w: converted_input(w.model),
    output:
        f"{RUN}/result.json",
    log:
        f"{RESULTS}/logs/runs/{RUN_PATTERN}.log",
    conda:
        "../envs/peftbench.yaml"
    threads: config["threads_per_run"]
    resources:
        # Derived from the model's size and the method (harness/peftbench/planning/sweep.py); SLURM reads them as
        # --mem, --time and --gpus. A retried job (--retries) gets `attempt` times as much.
        mem_mb=lambda w, attempt: attempt * SWEEP.mem_mb(w.model, w.method, w.task, w.setting),
        runtime=lambda w, attempt: attempt * SWEEP.runtime_min(w.model, w.method, w.task, w.setting),
        gpu=lambda w: SWEEP.gpus(w.model, w.method),
    params:
        # Snakemake cannot see edits inside the installed harness and plugins: this hash can.
        code=lambda w: SWEEP.code_hash(w.model, w.method, w.task),
        outdir=lambda w, output: os.path.dirname(output[0]),
        python=PYTHON,
        # Not part of the spec (the run's id and metrics stay): a job parameter, so switching
        # save_artifacts reruns the runs, which then write or drop their artifact/.
        artifact="--save-artifact" if config["save_artifacts"] else "",
    # exec: the run replaces the job's shell, so the SIGTERM a SLURM job's Snakemake passes on
    # (scancel, requeue, preemption, the time limit: rules/slurm.smk) reaches the run itself,
    # which checkpoints before it exits (docs/cluster.md); a shell would die of it instead.
    shell:
        "exec {params.python} -m peftbench run --spec {input.spec:q} --tokenized {input.tokenized:q}"
        " --threads {threads} --out {params.outdir:q} {params.artifact} > {log:q} 2>&1"
