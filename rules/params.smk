# Parameter counts of paper-scale models × the sweep's methods, without weights (meta device).


rule param_counts:
    output:
        f"{REPORTS}/param_counts.md",
    params:
        models=config["count_models"],
        methods=config["methods"],
        code=SWEEP.reporting_hash(),
    run:
        from peftbench.param_table import write_param_table

        write_param_table(output[0], params.models, params.methods)
