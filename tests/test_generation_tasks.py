"""The generation tasks: gsm8k (and the synthetic GSM8K-format folder), alpaca, docstring-name.
Local fixtures only (tests/data/, examples/data/): nothing is downloaded."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from peftbench import TASKS
from peftbench.planning.feasibility import task_problems
from peftbench.plugin.metrics import baseline_metrics
from peftbench.plugin.task import Head, TaskDataError, content_fingerprint
from tests.conftest import REPO

DATA = REPO / "tests" / "data"
ARITH = REPO / "examples" / "data" / "arith-gsm8k"


@pytest.mark.parametrize("name", ["gsm8k", "alpaca", "docstring-name"])
def test_generation_tasks_are_registered_and_plannable(name):
    task = TASKS.get(name)
    assert task.head == Head.GENERATION
    assert task.primary_metric in task.metrics
    assert task_problems(name) == []


# --- gsm8k ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, number",
    [
        ("She pays 2*617=<<2*617=1234>>1234 dollars.\n#### 1,234", "1234"),
        ("#### 72", "72"),
        ("#### -3", "-3"),
        ("It costs 2.50 each.\n#### 7.5 dollars", "7.5"),
        ("#### 5\nsome more text\n#### 6", "6"),  # the last mark
        ("The answer is $18.", "18"),  # no mark: the last number; $ and the full stop dropped
        ("First 3 then 4, so 12,000 in all", "12000"),
        ("He had 4 apples.\n#### none", "4"),  # a mark with no number after it: the last number
        ("no number here", ""),
        ("", ""),
    ],
)
def test_gsm8k_extracts_the_final_number(text, number):
    assert TASKS.get("gsm8k").extract(text) == number


def test_gsm8k_loads_a_local_folder_test_split_as_validation():
    task = TASKS.get("gsm8k")
    data = task.load(str(DATA / "gsm8k"))
    assert {s: len(data[s]) for s in data} == {"train": 4, "validation": 2}
    row = data["train"][2]
    assert (
        task.prompt(row)
        == "A school orders 48 boxes of 25 pencils. How many pencils does it order?"
    )
    assert task.completion(row).startswith("The school orders 48*25 = <<48*25=1200>>1200")
    assert [task.reference(r) for r in data["train"]] == ["36", "315", "1200", "20"]
    assert task.train_size(str(DATA / "gsm8k")) == 4
    assert task.data_dir_problems(str(DATA / "gsm8k")) == []


def test_gsm8k_stops_do_not_cut_a_worked_solution():
    task = TASKS.get("gsm8k")
    solution = TASKS.get("gsm8k").load(str(DATA / "gsm8k"))["train"][0]["answer"]
    assert "\n" in solution and not any(stop in solution for stop in task.stop)
    assert task.max_new_tokens >= 256


def write_split(folder: Path, train: str, test: str = '{"question": "q", "answer": "#### 1"}\n'):
    folder.mkdir(exist_ok=True)
    (folder / "train.jsonl").write_text(train, encoding="utf-8")
    (folder / "test.jsonl").write_text(test, encoding="utf-8")
    return str(folder)


GOOD = '{"question": "How many?", "answer": "2+2=<<2+2=4>>4\\n#### 4"}\n'


@pytest.mark.parametrize(
    "line, fragment",
    [
        ('{"question": "q", "answer": ', r"line 2: not JSON \(Expecting value, column 29\)"),
        ('["q", "a"]', "line 2: a JSON list, expected an object with question, answer"),
        ('{"question": "q"}', "line 2: no field answer; found: question; expected: question, "),
        ('{"question": 3, "answer": "#### 3"}', "line 2: field 'question' is 3, expected a string"),
        ('{"question": "q", "answer": "It is 4."}', "line 2: answer .*no final '#### <number>'"),
        ('{"question": "q", "answer": "#### four"}', "line 2: answer .*no final '#### <number>'"),
    ],
)
def test_gsm8k_bad_line_names_file_line_and_problem(tmp_path, line, fragment):
    folder = write_split(tmp_path / "g", GOOD + line + "\n")
    with pytest.raises(TaskDataError, match=rf"gsm8k: .*train\.jsonl {fragment}"):
        TASKS.get("gsm8k").load(folder)


def test_gsm8k_line_numbers_count_blank_lines(tmp_path):
    folder = write_split(tmp_path / "g", GOOD + "\n" + '{"question": "q"}\n')
    with pytest.raises(TaskDataError, match="line 3: no field answer"):
        TASKS.get("gsm8k").load(folder)


def test_gsm8k_empty_split_and_missing_files(tmp_path):
    task = TASKS.get("gsm8k")
    with pytest.raises(TaskDataError, match=r"test\.jsonl has no rows"):
        task.load(write_split(tmp_path / "g", GOOD, test="\n"))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "train.jsonl").write_text(GOOD)
    assert task.data_dir_problems(str(tmp_path / "half")) == [
        f"gsm8k: data folder {str(tmp_path / 'half')!r} has no test.jsonl; expected "
        "train.jsonl, test.jsonl (GSM8K JSON lines: question, answer)"
    ]
    missing = str(tmp_path / "nowhere")
    with pytest.raises(TaskDataError, match="'.*nowhere' does not exist; expected a folder of"):
        task.load(missing)
    assert task.train_size(missing) is None


# --- the synthetic GSM8K-format folder -------------------------------------------------------


def test_the_synthetic_arithmetic_folder_is_what_its_generator_writes(tmp_path):
    command = [sys.executable, str(REPO / "examples" / "make_arith_gsm8k.py"), "--out", tmp_path]
    subprocess.run(command, check=True, capture_output=True)
    for name in ("train.jsonl", "test.jsonl"):
        assert (tmp_path / name).read_bytes() == (ARITH / name).read_bytes(), name


def test_the_synthetic_folder_loads_as_gsm8k_with_correct_annotated_answers():
    task = TASKS.get("gsm8k")
    data = task.load(str(ARITH))
    assert {s: len(data[s]) for s in data} == {"train": 400, "validation": 100}
    assert not set(data["train"]["question"]) & set(data["validation"]["question"])
    for row in data["train"]:
        lines = row["answer"].split("\n")
        assert 2 <= len(lines) - 1 <= 3 and lines[-1] == f"#### {task.reference(row)}"
        for line in lines[:-1]:  # each step's annotation is true arithmetic
            calc, value = line.split("<<")[1].split(">>")[0].split("=")
            left, op, right = next((calc.partition(o) for o in "+-*/" if o in calc), ("", "", ""))
            exact = {"+": int.__add__, "-": int.__sub__, "*": int.__mul__, "/": int.__floordiv__}
            assert exact[op](int(left), int(right)) == int(value), line
            assert op != "/" or int(left) % int(right) == 0, line
    train_answers = [task.reference(r) for r in data["train"]]
    answers = [task.reference(r) for r in data["validation"]]
    assert baseline_metrics(task.metrics, train_answers, answers)["exact_match"] < 0.1


# --- alpaca ----------------------------------------------------------------------------------


def test_alpaca_loads_the_fixture_with_a_hash_carved_validation_split():
    task = TASKS.get("alpaca")
    data = task.load(str(DATA / "alpaca"))
    rows = json.loads((DATA / "alpaca" / "alpaca_data.json").read_text())
    assert len(data["train"]) + len(data["validation"]) == len(rows) == 20
    assert len(data["validation"]) == 2
    assert sorted([*data["train"]["output"], *data["validation"]["output"]]) == sorted(
        r["output"] for r in rows
    )
    assert task.reference(data["validation"][0]) == data["validation"][0]["output"].strip()
    assert task.primary_metric == "rouge_l" and task.max_new_tokens >= 256 and task.stop == ()


def test_alpaca_prompt_appends_a_non_empty_input():
    task = TASKS.get("alpaca")
    row = {"instruction": "Translate.", "input": "The cat.", "output": "Le chat."}
    assert task.prompt(row) == "Translate.\n\nThe cat."
    assert task.prompt({**row, "input": ""}) == "Translate."
    assert task.completion(row) == "Le chat."


def test_alpaca_split_follows_row_content_not_order(tmp_path):
    rows = json.loads((DATA / "alpaca" / "alpaca_data.json").read_text())
    (tmp_path / "alpaca_data.json").write_text(json.dumps(rows[::-1] + rows[:3]))
    task = TASKS.get("alpaca")
    original = task.load(str(DATA / "alpaca"))
    shuffled = task.load(str(tmp_path))
    assert set(shuffled["validation"]["output"]) == set(original["validation"]["output"])
    assert not set(shuffled["train"]["output"]) & set(shuffled["validation"]["output"])


@pytest.mark.parametrize(
    "content, fragment",
    [
        ('[{"instruction": "a",\n "input": ""\n "output": "b"}]', r"line 3: not JSON"),
        ('{"instruction": "a"}', "holds a JSON dict; expected a list of objects"),
        ("[]", "holds an empty list; expected a list of objects"),
        ('[{"instruction": "a", "input": "", "output": "b"}, "x"]', "item 1: a JSON str"),
        ('[{"instruction": "a", "output": "b"}]', "item 0: no field input; found: instruction, "),
        ('[{"instruction": "a", "input": null, "output": "b"}]', "item 0: field 'input' is None"),
    ],
)
def test_alpaca_bad_file_names_the_problem(tmp_path, content, fragment):
    (tmp_path / "alpaca_data.json").write_text(content)
    with pytest.raises(TaskDataError, match=rf"alpaca: .*alpaca_data\.json {fragment}"):
        TASKS.get("alpaca").load(str(tmp_path))


def test_alpaca_too_few_rows_for_both_splits(tmp_path):
    row = {"instruction": "a", "input": "", "output": "b"}
    (tmp_path / "alpaca_data.json").write_text(json.dumps([row]))
    with pytest.raises(TaskDataError, match="1 rows leave the (train|validation) split empty"):
        TASKS.get("alpaca").load(str(tmp_path))


def test_alpaca_folder_problems(tmp_path):
    task = TASKS.get("alpaca")
    assert task.data_dir_problems(str(DATA / "alpaca")) == []
    shutil.copy(DATA / "gsm8k" / "train.jsonl", tmp_path)
    assert task.data_dir_problems(str(tmp_path)) == [
        f"alpaca: data folder {str(tmp_path)!r} has no alpaca_data.json; expected "
        "alpaca_data.json (Alpaca's JSON list of objects)"
    ]


# --- docstring-name --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docstring_names():
    return TASKS.get("docstring-name").load()


def test_docstring_name_is_deterministic_and_disjoint(docstring_names):
    task = TASKS.get("docstring-name")
    assert content_fingerprint(task.load()) == content_fingerprint(docstring_names)
    key = [(r["scope"], r["name"]) for r in docstring_names["train"]]
    held = [(r["scope"], r["name"]) for r in docstring_names["validation"]]
    assert len(set(key)) == len(key) and len(set(held)) == len(held)
    assert not set(key) & set(held)
    assert not set(docstring_names["train"]["text"]) & set(docstring_names["validation"]["text"])
    assert 150 <= len(held) <= 400 and len(key) >= 1000


def test_docstring_name_rows_ask_for_the_unqualified_name(docstring_names):
    task = TASKS.get("docstring-name")
    row = docstring_names["validation"][0]
    assert task.reference(row) == row["name"] and not row["name"].startswith("_")
    assert row["scope"] in task.prompt(row) and row["text"] in task.prompt(row)
    assert task.extract(" get _ event _ loop \n") == "get_event_loop"
    assert task.max_new_tokens <= 16 and task.stop == ("\n",)


def test_docstring_name_baseline_is_far_below_a_learnable_score(docstring_names):
    task = TASKS.get("docstring-name")
    train = [task.reference(r) for r in docstring_names["train"]]
    references = [task.reference(r) for r in docstring_names["validation"]]
    assert baseline_metrics(task.metrics, train, references)["exact_match"] < 0.03
