# One job per model × method × task × grid setting × seed; each writes exactly one result record, atomically:
# a job killed mid-way leaves no result.json, so the next invocation reruns it.


rule run:
    input:
        tokenized=lambda w: tokenized_dir(w.model, w.task),
    output:
        f"{RESULTS}/runs/{{model}}/{{method}}/{{task}}/{{setting}}/seed{{seed}}/result.json",
    log:
        f"{RESULTS}/logs/runs/{{model}}/{{method}}/{{task}}/{{setting}}/seed{{seed}}.log",
    conda:
        "../envs/peftbench.yaml"
    threads: config["threads_per_run"]
    resources:
        # Derived from the model's size and the method (harness/sweep.py); SLURM reads them as
        # --mem, --time and --gpus. A retried job (--retries) gets `attempt` times as much.
        mem_mb=lambda w, attempt: attempt * SWEEP.mem_mb(w.model, w.method, w.task, w.setting),
        runtime=lambda w, attempt: attempt * SWEEP.runtime_min(w.model, w.method, w.task, w.setting),
        gpu=lambda w: SWEEP.gpus(w.model, w.method),
    params:
        # Snakemake cannot see edits inside the installed harness and plugins: this hash can.
        code=lambda w: SWEEP.code_hash(w.model, w.method, w.task),
        sets=lambda w: SWEEP.set_args(w.method, w.setting),
        data_dir=lambda w: SWEEP.data_dir_args(w.task),
        outdir=lambda w, output: os.path.dirname(output[0]),
        python=PYTHON,
    shell:
        "{params.python} -m peftbench run --model {wildcards.model:q} --method {wildcards.method:q}"
        " --task {wildcards.task:q} --seed {wildcards.seed} --setting {wildcards.setting:q}"
        " {params.sets} {params.data_dir}"
        " --tokenized {input.tokenized:q} --threads {threads} --out {params.outdir:q}"
        " > {log:q} 2>&1"
