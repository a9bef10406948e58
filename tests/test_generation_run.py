"""A generation task end to end through the runner on a tiny decoder: the record scores the
extracted generations against the references, keeps the texts and the 1/0 exact matches, and
carries forgetting and serving (merged for LoRA, none for prompt tuning, which does not merge)."""

from __future__ import annotations

import json

import pytest

from peftbench.planning.spec import resolve_spec
from peftbench.records.predictions import PREDICTIONS_FILE, read_predictions
from peftbench.records.record import read_record
from peftbench.run.runner import GENERATIONS_FILE, execute

pytestmark = pytest.mark.slow  # one tiny-llama run per method, generating: ~15 s each

EXAMPLES = 6
FORGETTING_TEXTS = 4
"""Forgetting on 4 texts of the sample (the whole sample: tests/test_forgetting.py)."""


@pytest.fixture(scope="module", params=["lora", "prompt_tuning"])
def run(request, tmp_path_factory, tokenized):
    method = request.param
    spec = resolve_spec(
        "tiny-llama",
        method,
        "docstring-name",
        0,
        overrides={
            "steps": 2,
            "batch_size": 4,
            "max_eval_examples": EXAMPLES,
            "max_length": 96,
            "forgetting_texts": FORGETTING_TEXTS,
        },
    )
    out = tmp_path_factory.mktemp(method)
    record = execute(spec, out, tokenized_dir=tokenized(spec), threads=1)
    return method, out, record


def test_the_record_scores_the_generations(run):
    method, out, record = run
    assert record["status"]["code"] == "ok", record["status"]
    assert read_record(out / "result.json")["run_id"] == record["run_id"]
    metrics = record["metrics"]
    assert metrics["primary"] == "exact_match" and metrics["num_examples"] == EXAMPLES
    assert set(metrics["values"]) == {"exact_match", "rouge_l"} == set(metrics["chance"])
    rows = json.loads((out / GENERATIONS_FILE).read_text())["rows"]
    assert len(rows) == EXAMPLES
    matches = [int(r["answer"].strip() == r["reference"].strip()) for r in rows]
    assert metrics["values"]["exact_match"] == pytest.approx(sum(matches) / EXAMPLES)
    kept = read_predictions(out / PREDICTIONS_FILE)
    assert kept.predictions.tolist() == matches and kept.references.tolist() == [1] * EXAMPLES
    assert kept.example_ids.tolist() == [r["example_id"] for r in rows]


def test_forgetting_and_serving_are_recorded(run):
    method, _, record = run
    forgetting = record["forgetting"]
    assert forgetting["unit"] == "nats/token" and forgetting["tokens"] > 0
    assert forgetting["forgetting"] == pytest.approx(forgetting["tuned_ce"] - forgetting["base_ce"])
    assert forgetting["sample"]["texts"] == FORGETTING_TEXTS  # the run's forgetting_texts
    serving = record["serving"]
    assert serving["unmerged"]["s_per_token"] > 0 and serving["prompts"] == 4
    if method == "lora":  # LoRA folds into the base weights; prompt tuning keeps its prompt
        assert serving["merged"]["s_per_token"] > 0
    else:
        assert serving["merged"] is None
    assert {"forget_s", "serve_s"} <= set(record["timing"])
