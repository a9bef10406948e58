"""`peftbench run` end to end on the real MiniLM (a few steps)."""

from __future__ import annotations

import json

import pytest

from peftbench.planning.spec import resolve_spec
from peftbench.records.predictions import PREDICTIONS_FILE, read_predictions
from peftbench.records.record import read_record
from peftbench.run.runner import execute

TINY = {
    "steps": 4,
    "batch_size": 8,
    "max_length": 32,
    "max_eval_examples": 48,
    "forgetting_texts": 4,
}
"""A few steps and examples; language-model runs measure forgetting on 4 texts (the whole sample:
tests/test_forgetting.py)."""
TIMING_KEYS = ("timing", "throughput", "memory")


def run_once(tmp_path, tokenized, method="lora", name="a", **overrides):
    spec = resolve_spec("minilm-l2", method, "docstring-match", 0, {**TINY, **overrides})
    return execute(
        spec, tmp_path / name, tokenized_dir=tokenized(spec), threads=1, command="test",
        lock_dir=tmp_path / "locks",
    )  # fmt: skip


def without_timing(record: dict) -> dict:
    record = json.loads(json.dumps(record))
    for key in TIMING_KEYS:
        record.pop(key)
    for key in ("started_at", "finished_at"):
        record.get("timing", {}).pop(key, None)
    return record


@pytest.mark.parametrize("method", ["full", "bitfit", "lora"])
def test_run_writes_a_complete_valid_record(tmp_path, tokenized, method):
    record = run_once(tmp_path, tokenized, method)
    assert record["status"] == {"code": "ok", "message": ""}
    assert read_record(tmp_path / "a" / "result.json") == record
    kept = read_predictions(tmp_path / "a" / PREDICTIONS_FILE)  # what the accuracy counts
    assert kept.run_id == record["run_id"] and len(kept.predictions) == 48
    assert record["metrics"]["num_examples"] == 48
    accuracy = float((kept.predictions == kept.references).mean())
    assert record["metrics"]["values"]["accuracy"] == pytest.approx(accuracy)
    assert record["params"]["trainable"] > 0 and record["params"]["base_total"] > 0
    assert record["throughput"]["train_samples_per_s"] > 0
    assert record["memory"]["train_cpu_peak_rss_bytes"] > 0
    assert record["provenance"]["data_fingerprint"].startswith("sha256:")
    assert record["spec"]["hparams"]["steps"] == 4 and len(record["training"]["losses"]) == 4


def test_cpu_runs_are_deterministic(tmp_path, tokenized):
    first, second = run_once(tmp_path, tokenized, name="a"), run_once(tmp_path, tokenized, name="b")
    assert without_timing(first) == without_timing(second)


def test_fp16_on_cpu_is_recorded_as_unsupported(tmp_path, tokenized):
    record = run_once(tmp_path, tokenized, precision="fp16")
    assert record["status"]["code"] == "unsupported"
    assert "fp16" in record["status"]["message"]
    assert record["metrics"] == {}


def test_divergence_is_recorded(tmp_path, tokenized):
    record = run_once(tmp_path, tokenized, method="full", lr=1e12)
    assert record["status"]["code"] == "diverged", record["status"]


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
@pytest.mark.parametrize("method", ["lora", "prompt_tuning"])
@pytest.mark.slow
def test_causal_lm_task_on_local_decoders(tmp_path, tokenized, model, method):
    """A decoder scores each class's answer after the prompt (10 multi-token package names):
    the run trains the answer's likelihood up and evaluates on validation and dev."""
    hp = {**TINY, "steps": 6, "max_length": 48, "max_eval_examples": 20, "lr": 1e-2}
    spec = resolve_spec(model, method, "docstring-module-lm", 0, hp)
    record = execute(
        spec, tmp_path / "r", tokenized_dir=tokenized(spec), threads=1, lock_dir=tmp_path / "l"
    )
    assert record["status"]["code"] == "ok", record["status"]
    losses = record["training"]["losses"]
    assert losses[-1] < losses[0]
    assert record["metrics"]["num_examples"] == 20
    assert record["metrics"]["dev"]["num_examples"] == 20
    assert record["metrics"]["chance"]["accuracy"] < 0.5  # 10 balanced classes
    assert record["params"]["trainable_head"] == 0  # the LM head is pretrained, not a task head


@pytest.mark.slow
def test_deep_prefix_methods_run_on_a_decoder(tmp_path, tokenized):
    spec = resolve_spec("tiny-gpt2", "mam", "docstring-match-lm", 0, TINY)
    record = execute(
        spec, tmp_path / "r", tokenized_dir=tokenized(spec), threads=1, lock_dir=tmp_path / "l"
    )
    assert record["status"]["code"] == "ok", record["status"]


@pytest.mark.parametrize("method", ["prompt_tuning", "lora"])
def test_head_lr_gives_the_task_head_its_own_rate(method):
    from peftbench.planning.counting import adapt
    from peftbench.planning.spec import resolve_hparams
    from peftbench.plugin.registry import METHODS, MODELS
    from peftbench.run.training import param_groups

    loaded = MODELS.get("minilm-l2").load(num_labels=2)
    hp = resolve_hparams(method, {"head_lr": 1e-3})
    model, _ = adapt(loaded.model, METHODS.get(method), hp, loaded.info)
    rest, head = param_groups(model, METHODS.get(method), loaded.info, hp)
    head_names = {n for n, p in model.named_parameters() if any(p is q for q in head["params"])}
    assert head["lr"] == 1e-3 and "lr" not in rest  # the rest keeps the optimizer's lr
    assert head_names and all(".classifier." in f".{n}" for n in head_names)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(p.numel() for group in (rest, head) for p in group["params"]) == trainable
    (only,) = param_groups(model, METHODS.get(method), loaded.info, {**hp, "head_lr": 0.0})
    assert len(only["params"]) == len(rest["params"]) + len(head["params"])


def test_max_eval_examples_draws_the_same_sample_of_every_class():
    from datasets import Dataset

    from peftbench.run.heads import eval_subset

    ordered = Dataset.from_dict({"labels": [c for c in range(10) for _ in range(50)]})  # by class
    sample = eval_subset(ordered, 64)
    assert len(sample) == 64
    assert len(set(sample["labels"])) == 10  # the first 64 rows would hold classes 0 and 1
    assert sample["labels"] == eval_subset(ordered, 64)["labels"]  # seeded: the same rows
    assert sample["labels"] == sorted(sample["labels"])  # in the split's own order
    assert eval_subset(ordered, 0) is ordered and eval_subset(ordered, 500) is ordered
