"""The load dtype is pinned: a float16 checkpoint loads in float32 unless asked otherwise
(transformers 5 would load its stored dtype)."""

from __future__ import annotations

import pytest
import torch

from peftbench.plugin.model import LOAD_DTYPES, TransformersModel, torch_dtype
from peftbench.plugin.task import Head
from tests.tiny_models import fp16_checkpoint


@pytest.fixture(scope="module")
def float16_checkpoint(tmp_path_factory):
    return fp16_checkpoint(tmp_path_factory.mktemp("fp16-llama"))


def dtypes(model: torch.nn.Module) -> set[torch.dtype]:
    return {p.dtype for p in model.parameters()}


@pytest.mark.parametrize("head", [Head.CLASSIFICATION, Head.CAUSAL_LM])
def test_a_float16_checkpoint_loads_in_float32_by_default(float16_checkpoint, head):
    loaded = TransformersModel(str(float16_checkpoint)).load(num_labels=2, head=head)
    assert dtypes(loaded.model) == {torch.float32}


def test_the_load_dtype_can_be_chosen_and_is_checked(float16_checkpoint):
    source = TransformersModel(str(float16_checkpoint))
    loaded = source.load(num_labels=2, head=Head.CAUSAL_LM, dtype="bfloat16")
    assert dtypes(loaded.model) == {torch.bfloat16}
    with pytest.raises(ValueError, match=r"dtype='fp32'; valid: float32, bfloat16, float16"):
        source.load(num_labels=2, dtype="fp32")
    assert [torch_dtype(name) for name in LOAD_DTYPES] == [
        torch.float32,
        torch.bfloat16,
        torch.float16,
    ]
