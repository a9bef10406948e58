"""The one meta-device build-and-apply (harness/peftbench/planning/structure.py) that
feasibility, resource estimates and parameter counts share."""

from __future__ import annotations

import pytest

from peftbench.planning import structure
from peftbench.planning.counting import count_model_method
from peftbench.planning.feasibility import meta_build
from peftbench.planning.spec import resolve_hparams
from peftbench.planning.sweep import footprint
from peftbench.plugin.task import Head

HP = {"steps": 1, "batch_size": 4, "max_length": 32}


def test_the_build_has_the_tasks_own_head():
    """docstring-module is a 10-way classifier, docstring-match a 2-way one: the estimate and
    the feasibility build count the classifier the run trains."""
    ten = structure.task_model("minilm-l2", "docstring-module")
    assert ten.config.num_labels == 10 and ten.model.classifier.out_features == 10
    assert meta_build("minilm-l2", "docstring-module") is ten
    hp = resolve_hparams("full", HP)
    module = footprint("minilm-l2", "full", "docstring-module", hp)
    match = footprint("minilm-l2", "full", "docstring-match", hp)
    assert module.trainable_params - match.trainable_params == 8 * (384 + 1)


def test_one_cache_serves_feasibility_estimates_and_counts(monkeypatch):
    monkeypatch.setattr(structure, "_BUILDS", {})  # whatever other tests built
    builds = []
    build = structure._build
    monkeypatch.setattr(structure, "_build", lambda *a: builds.append(a) or build(*a))
    hp = resolve_hparams("lora", {**HP, "r": 3})
    adapted = structure.task_model("minilm-l2", "docstring-match", "lora", hp)
    assert adapted.base is not None and adapted.not_applied is None
    assert structure.meta_model("minilm-l2", 2, "classification", "lora", dict(hp)) is adapted
    footprint("minilm-l2", "lora", "docstring-match", hp)
    assert len(builds) == 1
    # Counting takes the build over (it merges into it), so the next count builds anew.
    first = count_model_method("minilm-l2", "lora", {**HP, "r": 3})
    assert len(builds) == 1
    assert count_model_method("minilm-l2", "lora", {**HP, "r": 3}) == first
    assert len(builds) == 2
    assert first["trainable_method"] == 2 * 2 * 3 * (384 + 384)  # query, value × 2 layers
    assert structure.task_model("minilm-l2", "docstring-match", "lora", hp) is not adapted


def test_a_language_model_head_has_no_label_count_and_refusals_are_kept():
    lm = structure.meta_model("tiny-llama", 2, Head.CAUSAL_LM)
    assert structure.meta_model("tiny-llama", 0, "causal-lm") is lm
    hp = resolve_hparams("bitfit", HP)
    assert structure.meta_model("tiny-llama", 0, "causal-lm", "bitfit", hp).not_applied == (
        "tiny-llama has no bias terms"
    )
    bad = {**resolve_hparams("lora", HP), "target_modules": "nonexistent_proj"}
    for _ in range(2):  # built once; the same refusal each time
        with pytest.raises(ValueError, match="target"):
            structure.task_model("minilm-l2", "docstring-match", "lora", bad)
