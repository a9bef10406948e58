"""Reporting: result records → tables → markdown/HTML (aggregation, statistics, plots, templates,
verification, the summary line). Never imports the run layer; editing it reruns no training."""
