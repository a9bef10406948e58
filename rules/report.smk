# Aggregation (records -> one flat table) and rendering (table -> leaderboards).


rule aggregate:
    input:
        ALL_RECORDS,
    output:
        f"{RESULTS}/leaderboard.csv",
    params:
        code=SWEEP.reporting_hash(),
    run:
        from peftbench.aggregate import collect, write_table

        write_table(collect(input), output[0])


rule report:
    input:
        f"{RESULTS}/leaderboard.csv",
    output:
        markdown=f"{REPORTS}/leaderboard.md",
        html=f"{REPORTS}/leaderboard.html",
    params:
        code=SWEEP.reporting_hash(),
    run:
        from peftbench.report import write_reports

        write_reports(input[0], output.markdown, output.html)
