"""Time and peak memory of counting parameters, from ~16M to 70B parameters (no weights).

    python benchmarks/count_scaling.py [MODEL ...]

One line per model: static counts of LoRA (r=8) on every linear layer of the backbone, built on
the meta device. Each model is counted in a fresh process: ``count`` is the counting itself
(build, apply, count) after a warm-up count of minilm-l2 has done the one-time imports;
``process`` is the whole process, imports and warm-up included; ``peak RSS`` is the process's.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

MODELS = ("minilm-l2", "bert-base", "bert-large", "llama-2-7b", "llama-3-70b")
ALL_LINEAR = {
    "bert": "query,key,value,dense",  # dense: attention output, FFN in/out, pooler
    "llama": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
}


def child(model: str) -> None:
    """Count one model and print the figures as JSON."""
    from peftbench.planning.counting import count_model_method
    from peftbench.plugin.registry import MODELS as REGISTRY

    def count() -> dict:
        model_type = REGISTRY.get(model).config().model_type
        return count_model_method(model, "lora", {"target_modules": ALL_LINEAR[model_type]})

    count_model_method("minilm-l2", "lora")  # warm-up: imports
    start = time.perf_counter()
    counts = count()
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"counts": counts, "seconds": seconds, "peak_rss_bytes": peak_kib * 1024}))


def measure(model: str) -> str:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--child", model], capture_output=True, text=True, check=True
    ).stdout
    process = time.perf_counter() - start
    figures = json.loads(out.strip().splitlines()[-1])
    counts = figures["counts"]
    return (
        f"{model:12} base {counts['base_total'] / 1e9:7.3f}B  lora all-linear trainable "
        f"{counts['trainable_method']:>12,}  count {figures['seconds']:5.2f} s  "
        f"process {process:5.2f} s  peak RSS {figures['peak_rss_bytes'] / 2**20:6.0f} MiB"
    )


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        child(argv[1])
        return
    for model in argv or MODELS:
        print(measure(model), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
