# Parameter counts of paper-scale models × the sweep's methods, without weights (meta device).


rule param_counts:
    output:
        f"{REPORTS}/param_counts.md",
    log:
        f"{RESULTS}/logs/param_counts.log",
    conda:
        "../envs/peftbench.yaml"
    params:
        models=config["count_models"],
        methods=config["methods"],
        code=SWEEP.reporting_hash(),
    script:
        "../scripts/param_counts.py"
