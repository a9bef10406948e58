# Models shipped as GGUF files (models/smollm2.py) are converted once into a safetensors folder,
# before any job loads them: the runs and tokenizations of such a model take the folder as an
# input (peftbench.plugin.convert.converted_input), so no run pays the conversion. The folder lives in
# the model cache, <results_dir>/cache/models unless PEFTBENCH_CACHE is set; jobs inherit the
# variable, so the plugin loads the folder this rule wrote (checking the GGUF's SHA-256 in it).
import os
from pathlib import Path

import peftbench.plugin.convert
from peftbench.planning.codehash import hash_files
from peftbench.plugin.convert import converted_input, gguf_source

os.environ.setdefault(peftbench.plugin.convert.CACHE_ENV, f"{RESULTS}/cache")
MODEL_CACHE = str(peftbench.plugin.convert.model_cache())


rule convert:
    input:
        gguf=lambda w: gguf_source(config["models"], w.converted),
    output:
        directory(f"{MODEL_CACHE}/{{converted}}"),
    log:
        f"{RESULTS}/logs/convert/{{converted}}.log",
    conda:
        "../envs/peftbench.yaml"
    wildcard_constraints:
        converted="[^/]+",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        # A changed converter reconverts; a changed GGUF is a newer input (and a new SHA-256).
        code=hash_files([Path(peftbench.plugin.convert.__file__)]),
        python=PYTHON,
    shell:
        "{params.python} -m peftbench.plugin.convert --gguf {input.gguf:q} --out {output:q} > {log:q} 2>&1"
