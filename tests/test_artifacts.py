"""Reusable adapters: a run's artifact, loaded into a fresh base, reproduces the run's
validation predictions exactly (CPU, a few steps)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from peftbench.planning.spec import resolve_spec
from peftbench.plugin.registry import MODELS, TASKS
from peftbench.records.predictions import PREDICTIONS_FILE, read_predictions
from peftbench.records.record import read_record
from peftbench.run import heads
from peftbench.run.artifacts import (
    ARTIFACT_DIR,
    HEAD_FILE,
    INFO_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    load_artifact,
)
from peftbench.run.heads import for_head, loaders
from peftbench.run.heads import predict as _predict
from peftbench.run.runner import _load_data, execute

TINY = {
    "steps": 3,
    "batch_size": 8,
    "max_length": 32,
    "max_eval_examples": 32,
    "forgetting_texts": 4,
}
CASES = [
    ("minilm-l2", "docstring-match", "lora", "peft"),
    ("minilm-l2", "docstring-match", "prompt_tuning", "peft"),
    ("minilm-l2", "docstring-match", "houlsby", "peftbench-safetensors"),
    ("minilm-l2", "docstring-match", "full", "peftbench-safetensors"),
    pytest.param("tiny-llama", "docstring-match-lm", "lora", "peft", marks=pytest.mark.slow),
    pytest.param(  # tied embeddings
        "tiny-llama", "docstring-match-lm", "full", "peftbench-safetensors", marks=pytest.mark.slow
    ),
]


def recording_outputs(model, predict):
    """``predict()`` and the logits of every forward of ``model`` it made."""
    outputs = []
    hook = model.register_forward_hook(lambda m, a, out: outputs.append(out.logits.detach()))
    try:
        return predict(), outputs
    finally:
        hook.remove()


def validation_predictions(spec, model, tokenized_dir):
    """The run's own prediction function over the run's scored validation rows, and the
    model's outputs."""
    data, meta = _load_data(spec, tokenized_dir)
    task = TASKS.get(spec.task)
    head = for_head(task.head)
    _, validation, _ = loaders(data, MODELS.get(spec.model), spec.hparams, spec.seed, head)
    accelerator = SimpleNamespace(device=torch.device("cpu"))
    batch_size = spec.hparams["eval_batch_size"]
    (predictions, *_), outputs = recording_outputs(
        model,
        lambda: _predict(model, validation, accelerator, "cpu", meta.get("answer_ids"), batch_size),
    )
    return predictions, outputs


@pytest.mark.parametrize(("model", "task", "method", "fmt"), CASES)
def test_artifact_reproduces_the_validation_predictions(
    tmp_path, monkeypatch, tokenized, model, task, method, fmt
):
    """Loaded into a fresh base, the artifact makes the run's validation predictions, from
    bit-identical outputs."""
    run_outputs = []

    def predict(model, loader, *args, **kwargs):  # the run's validation pass comes first
        result, outputs = recording_outputs(model, lambda: _predict(model, loader, *args, **kwargs))
        run_outputs.append(outputs)
        return result

    monkeypatch.setattr(heads, "predict", predict)
    spec = resolve_spec(model, method, task, 0, TINY)
    run = tmp_path / "run"
    record = execute(
        spec, run, tokenized_dir=tokenized(spec), threads=1, command="test",
        lock_dir=tmp_path / "locks", save_artifacts=True,
    )  # fmt: skip
    assert record["status"]["code"] == "ok", record["status"]
    assert read_record(run / "result.json") == record
    entry = record["artifact"]
    assert entry["format"] == fmt and entry["path"] == ARTIFACT_DIR
    folder = run / ARTIFACT_DIR
    assert sorted(p.name for p in folder.iterdir()) == entry["files"]
    weights = {"peft": "adapter_model.safetensors", "peftbench-safetensors": WEIGHTS_FILE}[fmt]
    assert weights in entry["files"] and INFO_FILE in entry["files"]
    if fmt == "peft":
        assert "adapter_config.json" in entry["files"]
    # The files hold exactly the counted tensors; the header is what the disk adds.
    assert entry["tensor_bytes"] == record["params"]["stored_bytes"]
    assert entry["tensor_bytes"] < entry["bytes"] < entry["tensor_bytes"] + 2**16

    loaded = load_artifact(run)
    assert not any(p.requires_grad for p in loaded.parameters())
    predictions, outputs = validation_predictions(spec, loaded, tokenized(spec))
    assert predictions == read_predictions(run / PREDICTIONS_FILE).predictions.tolist()
    validation = run_outputs[0]
    assert len(outputs) == len(validation)
    assert all(torch.equal(a, b) for a, b in zip(outputs, validation, strict=True))


def test_peft_artifact_keeps_a_plain_head_beside_peft_files(tmp_path, tokenized):
    """LoRA leaves the classifier a plain module: peft's file lacks it, head.safetensors has
    it; a wrong base (another fingerprint) is refused."""
    spec = resolve_spec("minilm-l2", "lora", "docstring-match", 0, TINY)
    run = tmp_path / "run"
    record = execute(
        spec, run, tokenized_dir=tokenized(spec), command="t", lock_dir=tmp_path / "l",
        save_artifacts=True,
    )  # fmt: skip
    assert HEAD_FILE in record["artifact"]["files"]
    described = json.loads((run / ARTIFACT_DIR / INFO_FILE).read_text())
    assert described["head_tensors"] and described["hparams"] == spec.hparams
    described["model_fingerprint"] = "sha256:other"
    (run / ARTIFACT_DIR / INFO_FILE).write_text(json.dumps(described))
    with pytest.raises(ArtifactError, match="sha256:other"):
        load_artifact(run)


def test_runs_without_the_option_keep_no_artifact(tmp_path, tokenized):
    spec = resolve_spec("minilm-l2", "bitfit", "docstring-match", 0, TINY)
    run = tmp_path / "run"
    (run / ARTIFACT_DIR).mkdir(parents=True)  # an earlier run's: removed
    record = execute(
        spec, run, tokenized_dir=tokenized(spec), threads=1, command="t", lock_dir=tmp_path / "l"
    )
    assert record["status"]["code"] == "ok" and "artifact" not in record
    assert not (run / ARTIFACT_DIR).exists()
