"""``peftbench verify`` finds every inconsistency in a results folder and names its file;
``peftbench aggregate`` stops at a bad record, or skips it with a warning when asked."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from peftbench.planning.spec import resolve_spec
from peftbench.reporting.aggregate import collect, write_table
from peftbench.reporting.verify import verify
from peftbench.run.runner import execute
from tests.conftest import run_cli

TINY = {"steps": 2, "batch_size": 4, "max_length": 16, "max_eval_examples": 16}
RUNS = {
    "full": "minilm-l2/full/docstring-match/default/seed0",
    "lora": "minilm-l2/lora/docstring-match/default/seed0",
}


@pytest.fixture(scope="module")
def complete(tmp_path_factory, tokenized) -> Path:
    """A results folder as a sweep leaves it: two records and the leaderboard table."""
    results = tmp_path_factory.mktemp("sweep") / "results"
    for method, run_id in RUNS.items():
        spec = resolve_spec("minilm-l2", method, "docstring-match", 0, TINY)
        command = f"peftbench run --model minilm-l2 --method {method} --task docstring-match"
        execute(
            spec, results / "runs" / run_id, tokenized_dir=tokenized(spec), threads=1,
            command=command, lock_dir=results,
        )  # fmt: skip
    write_table(
        collect(sorted((results / "runs").rglob("result.json"))), results / "leaderboard.csv"
    )
    return results


@pytest.fixture
def results(complete, tmp_path) -> Path:
    """A copy of the complete folder, free to damage."""
    return Path(shutil.copytree(complete, tmp_path / "results"))


def record_path(results: Path, method: str) -> Path:
    return results / "runs" / RUNS[method] / "result.json"


def edit_record(path: Path, change: Callable[[dict], None]) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


@pytest.mark.slow
def test_a_complete_folder_passes(complete):
    assert verify(complete) == (2, [])
    checked = run_cli("verify", str(complete))
    assert checked.returncode == 0 and "2 valid records, 0 problems" in checked.stderr


def corrupt(results: Path) -> None:
    record_path(results, "lora").write_text('{"schema_version": "1.0", "run_id": ')


def old_schema(results: Path) -> None:
    edit_record(record_path(results, "lora"), lambda r: r.update(schema_version="0.9"))


def other_data(results: Path) -> None:
    edit_record(
        record_path(results, "lora"),
        lambda r: r["provenance"].update(data_fingerprint="sha256:0ther"),
    )


def other_weights(results: Path) -> None:
    edit_record(
        record_path(results, "lora"),
        lambda r: r["provenance"].update(model_fingerprint="sha256:0ther"),
    )


def no_command(results: Path) -> None:
    edit_record(record_path(results, "lora"), lambda r: r["provenance"].update(command=""))


def misplaced(results: Path) -> None:
    moved = results / "runs/minilm-l2/lora/docstring-match/default/seed1/result.json"
    moved.parent.mkdir(parents=True)
    shutil.copy(record_path(results, "lora"), moved)


def deleted(results: Path) -> None:
    record_path(results, "lora").unlink()


def stale_table(results: Path) -> None:
    table = pd.read_csv(results / "leaderboard.csv")
    table.loc[table["spec.method"] == "lora", "status.code"] = "failed"
    table.to_csv(results / "leaderboard.csv", index=False)


def never_aggregated(results: Path) -> None:
    (results / "leaderboard.csv").unlink()


def other_spec(results: Path) -> None:
    contract = record_path(results, "lora").parent / "spec.json"
    spec = json.loads(contract.read_text())
    spec["hparams"]["lr"] = 0.5
    contract.write_text(json.dumps(spec))


def no_spec(results: Path) -> None:
    (record_path(results, "lora").parent / "spec.json").unlink()


LORA_ID = "minilm-l2/lora/docstring-match/default/seed0"
LORA = f"runs/{LORA_ID}/result.json"


@pytest.mark.parametrize(
    "damage, where, fragments",
    [
        (corrupt, LORA, ["not valid JSON"]),
        (corrupt, "leaderboard.csv", [LORA_ID, "not a valid"]),
        (old_schema, LORA, ["schema_version '0.9'", "reads '1.0', '1.1'"]),
        (other_data, LORA, ["data_fingerprint sha256:0ther differs", "task 'docstring-match'"]),
        (other_weights, LORA, ["model_fingerprint sha256:0ther differs", "model 'minilm-l2'"]),
        (no_command, LORA, ["provenance.command is empty"]),
        (misplaced, "seed1/result.json", ["holds run", "seed0"]),
        (deleted, "leaderboard.csv", [LORA_ID, "is missing"]),
        (stale_table, "leaderboard.csv", ["says status 'failed'", "says 'ok'"]),
        (never_aggregated, "leaderboard.csv", ["never aggregated"]),
        (other_spec, LORA, ["its spec differs from", "spec.json in hparams"]),
        (no_spec, LORA, ["no spec.json beside it"]),
    ],
)
def test_problems_name_their_file(results, damage, where, fragments):
    damage(results)
    _, problems = verify(results)
    named = [p for p in problems if p.path.endswith(where)]
    assert named, problems
    for fragment in fragments:
        assert any(fragment in p.message for p in named), (fragment, problems)


@pytest.mark.slow
def test_verify_command_fails_on_problems(results):
    deleted(results)
    checked = run_cli("verify", str(results), check=False)
    assert checked.returncode == 1
    assert "leaderboard.csv: row 'minilm-l2/lora/docstring-match/default/seed0'" in checked.stdout
    assert "1 valid records, 1 problems" in checked.stderr


@pytest.mark.parametrize("damage", [corrupt, old_schema])
def test_aggregate_names_a_bad_record_and_stops_or_skips(results, damage):
    damage(results)
    records = [str(record_path(results, m)) for m in RUNS]
    table = results / "table.csv"
    stopped = run_cli("aggregate", *records, "--out", str(table), check=False)
    assert stopped.returncode != 0
    assert str(record_path(results, "lora")) in stopped.stderr
    assert not table.exists()

    skipped = run_cli("aggregate", *records, "--out", str(table), "--skip-invalid")
    assert "skipped" in skipped.stderr and str(record_path(results, "lora")) in skipped.stderr
    assert list(pd.read_csv(table)["spec.method"]) == ["full"]
