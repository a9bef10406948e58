# Aggregation (records -> one flat table) and rendering (table -> leaderboards, plots, tables).
# The outputs flagged with report() also make up `snakemake --report report.html`.
from peftbench.reporting.plots import PLOTS


report: "report/workflow.rst"


rule aggregate:
    input:
        ALL_RECORDS,
    output:
        report(
            f"{RESULTS}/leaderboard.csv",
            caption="report/runs.rst",
            category="Tables",
        ),
    log:
        f"{RESULTS}/logs/aggregate.log",
    conda:
        "../envs/peftbench.yaml"
    params:
        code=SWEEP.reporting_hash(),
    script:
        "../scripts/aggregate.py"


rule report:
    input:
        f"{RESULTS}/leaderboard.csv",
    output:
        markdown=f"{REPORTS}/leaderboard.md",
        html=report(
            f"{REPORTS}/leaderboard.html",
            caption="report/leaderboard.rst",
            category="Leaderboard",
        ),
        plots=[
            report(f"{REPORTS}/plots/{stem}.svg", caption=f"report/{stem}.rst", category="Plots")
            for stem in PLOTS
        ],
        overall=report(
            f"{REPORTS}/tables/overall.csv",
            caption="report/overall.rst",
            category="Tables",
        ),
        tasks=report(
            f"{REPORTS}/tables/tasks.csv",
            caption="report/tasks.rst",
            category="Tables",
        ),
        grid=report(
            f"{REPORTS}/tables/grid.csv",
            caption="report/grid.rst",
            category="Tables",
        ),
        pairs=report(
            f"{REPORTS}/tables/pairs.csv",
            caption="report/pairs.rst",
            category="Tables",
        ),
    log:
        f"{RESULTS}/logs/report.log",
    conda:
        "../envs/peftbench.yaml"
    params:
        code=SWEEP.reporting_hash(),
        # Links from the reports to the definitions in this repository's docs/.
        docs=os.path.relpath(os.path.join(workflow.basedir, "docs"), REPORTS),
    script:
        "../scripts/report.py"
