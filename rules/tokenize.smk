# Tokenization, once per task × tokenizer × length, shared by every run that needs it. The folder
# is written under a temporary name and renamed when complete (harness/peftbench/run/data.py), so concurrent
# runs only ever see a finished copy, and Snakemake schedules one job per folder.


rule tokenize:
    input:
        converted=lambda w: converted_input(SWEEP.model_for_tokenizer[w.tokenizer]),
    output:
        directory(f"{RESULTS}/cache/tokenized/{{tokenizer}}/{{task}}/len{{max_length}}"),
    log:
        f"{RESULTS}/logs/tokenize/{{tokenizer}}/{{task}}/len{{max_length}}.log",
    conda:
        "../envs/peftbench.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        model=lambda w: SWEEP.model_for_tokenizer[w.tokenizer],
        data_dir=lambda w: SWEEP.data_dir_args(w.task),
        code=lambda w: SWEEP.tokenize_hash(w.task, w.tokenizer),
        python=PYTHON,
    shell:
        "{params.python} -m peftbench tokenize --task {wildcards.task:q} --model {params.model:q}"
        " --max-length {wildcards.max_length} {params.data_dir} --out {output:q} > {log:q} 2>&1"
