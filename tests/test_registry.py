from __future__ import annotations

import pytest

from peftbench import METHODS, MODELS, TASKS
from peftbench.plugin.registry import Registry, UnknownNameError
from tests.conftest import run_cli


def test_builtin_plugins_are_registered_through_entry_points():
    assert {"full", "bitfit", "lora"} <= set(METHODS.names())
    assert {"docstring-module", "docstring-match", "glue/sst2", "glue/rte", "glue/cola"} <= set(
        TASKS.names()
    )
    assert {"minilm-l2", "minilm-l4", "minilm-l6"} <= set(MODELS.names())


@pytest.mark.parametrize(
    "registry, bad", [(METHODS, "lroa"), (TASKS, "glue/sst3"), (MODELS, "minilm-l7")]
)
def test_unknown_name_lists_valid_names(registry, bad):
    with pytest.raises(UnknownNameError) as error:
        registry.get(bad)
    message = str(error.value)
    assert repr(bad) in message
    for name in registry.names():
        assert name in message


def test_hub_ids_pass_through():
    model = MODELS.get("hf:roberta-base")
    assert model.location == "roberta-base"
    assert model.name == "hf:roberta-base"
    assert model.trust_remote_code is False


def test_decorator_registers_instances_by_name():
    registry: Registry[object] = Registry("widget", "peftbench.test-widgets")

    @registry.register("thing")
    class Thing:
        description = "a thing"

    assert isinstance(registry.get("thing"), Thing)
    assert registry.get("thing").name == "thing"
    assert registry.names() == ["thing"]


def test_a_provider_lists_its_names_and_builds_each_once_when_asked():
    registry: Registry[object] = Registry("widget", "peftbench.test-widgets")
    built: list[str] = []

    class Widget:
        def __init__(self, name: str) -> None:
            built.append(name)

    registry.add_provider(lambda: ["w:a", "w:b"], Widget)
    assert registry.names() == ["w:a", "w:b"] and built == []  # listed, not built
    assert registry.get("w:a") is registry.get("w:a") and built == ["w:a"]
    assert registry.get("w:a").name == "w:a"
    suggestion = "unknown widget 'w:c'; did you mean 'w:[ab]' or 'w:[ab]'"
    with pytest.raises(UnknownNameError, match=suggestion):
        registry.get("w:c")


def test_list_command_prints_descriptions():
    out = run_cli("list", "methods").stdout
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert {"full", "bitfit", "lora"} <= set(lines)
    assert "Low-Rank" in lines["lora"] or "low-rank" in lines["lora"]


def test_run_with_unknown_method_fails_fast_with_choices(tmp_path):
    result = run_cli(
        "run",
        "--model",
        "minilm-l2",
        "--method",
        "nope",
        "--task",
        "docstring-match",
        "--out",
        str(tmp_path),
        check=False,
    )
    assert result.returncode == 2
    assert "unknown method 'nope'" in result.stderr and "lora" in result.stderr
    assert not (tmp_path / "result.json").exists()
