"""Bad task data stops with one clear error naming the task, the file, the line, the bad value
and the valid choices; a ``data_dirs`` folder that cannot hold a task's files is refused when
the sweep is planned, before any job starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY_BUDGET, run_cli

from peftbench import TASKS
from peftbench.planning.sweep import SweepError, plan_sweep
from peftbench.plugin.task import TaskDataError
from peftbench.run.data import tokenize_task
from tests.test_faults import refusal

RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"
RTE_ROWS = "0\tA cat sat.\tA cat sits.\tentailment\n1\tIt rains.\tIt is dry.\tnot_entailment\n"
SST2_ROWS = "sentence\tlabel\na fine film \t1\na dull film \t0\n"
COLA_ROWS = "gj04\t1\t\tThe cat sat.\ngj04\t0\t*\tCat the sat.\n"


def glue_folder(folder: Path, train: str | bytes, validation: str) -> Path:
    """A GLUE task folder with these ``train.tsv`` and ``validation.tsv`` contents."""
    folder.mkdir(parents=True, exist_ok=True)
    write = Path.write_bytes if isinstance(train, bytes) else Path.write_text
    write(folder / "train.tsv", train)
    (folder / "validation.tsv").write_text(validation)
    return folder


def load_error(task: str, folder: Path) -> str:
    with pytest.raises(TaskDataError) as info:
        TASKS.get(task).load(str(folder))
    return str(info.value)


@pytest.mark.parametrize(
    "task, rows, labels",
    [
        ("glue/rte", RTE_HEADER + RTE_ROWS, [0, 1]),
        ("glue/rte", RTE_HEADER + "0\tA.\tB.\t1\n1\tC.\tD.\t0\n", [1, 0]),  # indices also read
        ("glue/sst2", SST2_ROWS, [1, 0]),
        ("glue/cola", COLA_ROWS, [1, 0]),
    ],
)
def test_good_small_files_load(tmp_path, task, rows, labels):
    data = TASKS.get(task).load(str(glue_folder(tmp_path, rows, rows)))
    assert data["train"]["label"] == labels == data["validation"]["label"]


def test_text_label_not_in_the_task_names_line_value_and_valid_labels(tmp_path):
    train = RTE_HEADER + RTE_ROWS + "2\tX.\tY.\tmaybe\n"
    folder = glue_folder(tmp_path, train, RTE_HEADER + RTE_ROWS)
    assert load_error("glue/rte", folder) == (
        f"glue/rte: {folder / 'train.tsv'} line 4: label 'maybe' is not one of entailment, "
        "not_entailment (or an index 0 to 1)"
    )


def test_numeric_label_out_of_range_names_the_range(tmp_path):
    folder = glue_folder(tmp_path, SST2_ROWS + "a third film \t7\n", SST2_ROWS)
    assert load_error("glue/sst2", folder) == (
        f"glue/sst2: {folder / 'train.tsv'} line 4: label 7 is out of range; "
        "valid: 0 to 1 (0 negative, 1 positive)"
    )


def test_numeric_label_that_is_not_a_number(tmp_path):
    folder = glue_folder(tmp_path, SST2_ROWS, SST2_ROWS + "a third film \tpositive\n")
    assert load_error("glue/sst2", folder) == (
        f"glue/sst2: {folder / 'validation.tsv'} line 4: label 'positive' is not a class index; "
        "valid: 0 to 1 (0 negative, 1 positive)"
    )


def test_missing_column_names_columns_found_and_expected(tmp_path):
    folder = glue_folder(tmp_path, "sentence\tlbl\na fine film \t1\n", SST2_ROWS)
    assert load_error("glue/sst2", folder) == (
        f"glue/sst2: {folder / 'train.tsv'} line 1: no column label; found columns: "
        "sentence, lbl; expected: sentence, label"
    )


def test_row_missing_a_field_names_the_layout(tmp_path):
    folder = glue_folder(tmp_path, COLA_ROWS + "gj04\t1\n", COLA_ROWS)
    assert load_error("glue/cola", folder) == (
        f"glue/cola: {folder / 'train.tsv'} line 3: 2 tab-separated fields, expected 4 "
        "(source, label, original_mark, sentence)"
    )


@pytest.mark.parametrize("validation", ["", RTE_HEADER], ids=["no-bytes", "header-only"])
def test_empty_split_names_the_file(tmp_path, validation):
    folder = glue_folder(tmp_path, RTE_HEADER + RTE_ROWS, validation)
    assert load_error("glue/rte", folder) == (
        f"glue/rte: {folder / 'validation.tsv'} has no rows (an empty split)"
    )


def test_non_utf8_file_names_line_and_byte(tmp_path):
    train = (RTE_HEADER + RTE_ROWS).encode() + "2\tCaf\xe9.\tA caf\xe9.\tentailment\n".encode(
        "latin-1"
    )
    folder = glue_folder(tmp_path, train, RTE_HEADER + RTE_ROWS)
    byte = train.index(b"\xe9")
    assert load_error("glue/rte", folder) == (
        f"glue/rte: {folder / 'train.tsv'} line 4 (byte {byte}): b'\\xe9' is not UTF-8; "
        "task files must be UTF-8 text"
    )


def test_missing_folder_and_missing_file_name_what_is_expected(tmp_path):
    task = TASKS.get("glue/rte")
    absent = tmp_path / "absent"
    assert task.data_dir_problems(str(absent)) == [
        f"glue/rte: data folder {str(absent)!r} does not exist; "
        "expected a folder of train.tsv, validation.tsv"
    ]
    (tmp_path / "train.tsv").write_text(RTE_HEADER + RTE_ROWS)
    assert load_error("glue/rte", tmp_path) == (
        f"glue/rte: data folder {str(tmp_path)!r} has no validation.tsv; "
        "expected train.tsv, validation.tsv (GLUE TSV layout)"
    )
    assert task.data_dir_problems(str(glue_folder(tmp_path, RTE_ROWS, RTE_ROWS))) == []


def test_train_split_too_small_for_a_dev_split(tmp_path):
    folder = glue_folder(tmp_path, RTE_HEADER + RTE_ROWS.splitlines()[0], RTE_HEADER + RTE_ROWS)
    with pytest.raises(TaskDataError, match="train split has 1 row"):
        tokenize_task("glue/rte", "minilm-l2", 32, str(folder))


def test_tokenize_command_reports_bad_data_in_one_line_with_code_2(tmp_path):
    folder = glue_folder(tmp_path / "rte", RTE_HEADER + "0\tA.\tB.\tmaybe\n", RTE_HEADER + RTE_ROWS)
    result = run_cli(
        "tokenize", "--task", "glue/rte", "--model", "minilm-l2", "--max-length", "32",
        "--data-dir", str(folder), "--out", str(tmp_path / "tokenized"), check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"peftbench: error: glue/rte: {folder / 'train.tsv'} line 2: label 'maybe' is not one "
        "of entailment, not_entailment (or an index 0 to 1)"
    ]
    assert not (tmp_path / "tokenized").exists()


@pytest.mark.parametrize(
    "folder, fragment",
    [
        ("/nonexistent", "data folder '/nonexistent' does not exist"),
        ("only-train", "data folder 'only-train' has no validation.tsv"),  # relative: workdir
    ],
)
def test_sweep_refuses_a_data_dir_without_the_task_files(tmp_path, monkeypatch, folder, fragment):
    """As the Snakefile checks a config (a relative folder is the working directory's); the
    refusal through Snakemake itself is tests/test_faults.py's."""
    (tmp_path / "only-train").mkdir()
    (tmp_path / "only-train" / "train.tsv").write_text(RTE_HEADER + RTE_ROWS)
    monkeypatch.chdir(tmp_path)
    message = refusal(
        tmp_path, tasks=["glue/rte"], methods=["full"], data_dirs={"glue/rte": folder}
    )
    assert f"data_dirs: glue/rte: {fragment}" in message
    assert "train.tsv, validation.tsv" in message


def test_data_dirs_of_tasks_outside_the_sweep_are_not_checked():
    config = {
        "models": ["minilm-l2"],
        "methods": ["full"],
        "seeds": [0],
        "budget": TINY_BUDGET,
        "data_dirs": {"glue/rte": "/nonexistent"},
    }
    assert len(plan_sweep({**config, "tasks": ["docstring-match"]}).specs) == 1
    with pytest.raises(SweepError, match="'/nonexistent' does not exist"):
        plan_sweep({**config, "tasks": ["glue/rte"]})


def test_a_batch_larger_than_a_local_training_split_is_refused_at_plan_time(tmp_path):
    rows = "".join(f"{i}\tA{i}.\tB{i}.\tentailment\n" for i in range(10))
    folder = glue_folder(tmp_path / "rte", RTE_HEADER + rows, RTE_HEADER + RTE_ROWS)
    config = {
        "models": ["minilm-l2"],
        "methods": ["full"],
        "tasks": ["glue/rte"],
        "seeds": [0],
        "data_dirs": {"glue/rte": str(folder)},
    }
    assert len(plan_sweep({**config, "budget": {**TINY_BUDGET, "batch_size": 8}}).specs) == 1
    with pytest.raises(SweepError) as refused:
        plan_sweep({**config, "budget": {**TINY_BUDGET, "batch_size": 16}})
    assert "batch_size=16 for full: larger than the 8 training examples of task 'glue/rte'" in str(
        refused.value
    )
    assert "(10 less the dev split); valid: 1 to 8" in str(refused.value)
    (folder / "train.tsv").write_text(RTE_HEADER + rows + "10\tC.\tD.\tmaybe\n")
    with pytest.raises(SweepError, match="line 12: label 'maybe' is not one of entailment"):
        plan_sweep({**config, "seeds": [1], "budget": {**TINY_BUDGET, "batch_size": 8}})
