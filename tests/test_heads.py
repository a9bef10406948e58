"""One strategy per task head (peftbench.run.heads), the learning-rate schedule and gradient
clipping of the training loop (peftbench.run.training), and their hyperparameters' checks."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset, DatasetDict

from peftbench.planning.spec import SCHEDULERS_NEEDING_MORE, lr_schedulers, resolve_hparams
from peftbench.plugin.errors import SpecError
from peftbench.plugin.registry import METHODS, MODELS
from peftbench.plugin.task import Head
from peftbench.run.heads import (
    GENERATION_TEXT_COLUMNS,
    CausalLMHead,
    GenerationHead,
    TaskHead,
    for_head,
    loaders,
)

HP = {"batch_size": 2, "eval_batch_size": 3, "max_eval_examples": 0}


def test_each_head_has_its_strategy():
    assert [type(for_head(h)) for h in Head] == [TaskHead, CausalLMHead, GenerationHead]
    for head in Head:
        strategy = for_head(head.value)
        assert strategy.head == head and strategy.language_model == head.language_model
    with pytest.raises(ValueError, match="head 'regression'; valid: classification, causal-lm"):
        for_head("regression")


def rows(n: int, generation: bool = False) -> Dataset:
    columns = {
        "input_ids": [[101, 7 + i, 8, 102][: 2 + i % 3] for i in range(n)],
        "labels": [i % 2 for i in range(n)],
    }
    if generation:
        columns["labels"] = [[-100, 9 + i] for i in range(n)]
        columns["prompt_length"] = [1] * n
        columns["reference"] = [f"name{i % 2}" for i in range(n)]
        columns["truncated"] = [False] * n
    columns["attention_mask"] = [[1] * len(ids) for ids in columns["input_ids"]]
    return Dataset.from_dict(columns)


def splits(generation: bool = False) -> DatasetDict:
    return DatasetDict(
        {s: rows(n, generation) for s, n in (("train", 8), ("validation", 5), ("dev", 4))}
    )


def test_a_classification_head_batches_every_split_with_padding():
    train, validation, dev = loaders(splits(), MODELS.get("minilm-l2"), HP, 0, TaskHead())
    batch = next(iter(train))
    assert batch["input_ids"].shape[0] == 2 and batch["labels"].dtype == torch.long
    assert [len(b["labels"]) for b in validation] == [3, 2] and len(list(dev)) == 2


def test_a_generation_head_trains_on_model_inputs_and_scores_rows():
    data = splits(generation=True)
    train, validation, dev = loaders(data, MODELS.get("minilm-l2"), HP, 0, GenerationHead())
    batch = next(iter(train))
    assert not set(GENERATION_TEXT_COLUMNS) & set(batch)  # the text columns stay for scoring
    assert (batch["labels"][:, 0] == -100).all()  # the reply tokens only
    assert validation is data["validation"] and dev is data["dev"]  # rows: generation pads left


def test_the_chance_level_is_the_heads_own():
    run = SimpleNamespace(
        data={"train": Dataset.from_dict({"labels": [1, 1, 0], "reference": ["a", "b", "b"]})},
        task=SimpleNamespace(metrics=("accuracy",)),
    )
    assert TaskHead().chance(run, [1, 0, 1, 1]) == {"accuracy": 0.75}  # the majority class
    run.task.metrics = ("exact_match",)
    assert GenerationHead().chance(run, ["b", "a"]) == {"exact_match": 0.5}  # the commonest


def test_lr_scheduler_and_max_grad_norm_are_checked_at_plan_time():
    assert resolve_hparams("lora", {"lr_scheduler": "cosine"})["lr_scheduler"] == "cosine"
    assert resolve_hparams("lora")["lr_scheduler"] == "linear"  # today's schedule
    assert resolve_hparams("lora")["max_grad_norm"] == 0.0  # no clipping, as before
    assert "cosine" in lr_schedulers() and not set(SCHEDULERS_NEEDING_MORE) & set(lr_schedulers())
    for bad in ("cosine_with_min_lr", "cosin"):
        with pytest.raises(SpecError, match=rf"lr_scheduler='{bad}'; valid: linear, cosine, "):
            resolve_hparams("lora", {"lr_scheduler": bad})
    with pytest.raises(SpecError, match=r"max_grad_norm=-1.0: must be >= 0 \(0: no clipping\)"):
        resolve_hparams("lora", {"max_grad_norm": -1})


@pytest.mark.parametrize("name", sorted(SCHEDULERS_NEEDING_MORE))
def test_the_schedulers_left_out_need_more_than_a_run_gives(name):
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises((TypeError, ValueError)):
        scheduler = get_scheduler(name, optimizer, num_warmup_steps=1, num_training_steps=4)
        optimizer.step()
        scheduler.step()


def rates_of(name: str) -> tuple[list[float], list[float]]:
    """The learning rate after each of 20 steps: the run's schedule and transformers' own."""
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    from peftbench.run.training import optimizer_and_schedule

    hp = resolve_hparams("full", {"lr_scheduler": name, "steps": 20, "warmup_ratio": 0.1})
    model = torch.nn.Linear(2, 2)
    run = SimpleNamespace(
        hp=hp, model=model, method=METHODS.get("full"), info=None,
        policy=SimpleNamespace(optimizer_options=dict),
    )  # fmt: skip
    optimizer, scheduler = optimizer_and_schedule(run)
    reference_optimizer = torch.optim.AdamW(model.parameters(), lr=hp["lr"])
    make = {"linear": get_linear_schedule_with_warmup, "cosine": get_cosine_schedule_with_warmup}
    reference = make[name](reference_optimizer, math.ceil(0.1 * 20), 20)
    ours, theirs = [], []
    for _ in range(20):
        for stepped in (optimizer, scheduler, reference_optimizer, reference):
            stepped.step()
        ours.append(scheduler.get_last_lr()[0])
        theirs.append(reference.get_last_lr()[0])
    return ours, theirs


def test_the_schedule_is_transformers_own():
    linear, reference = rates_of("linear")
    assert linear == reference  # the default: the linear warm-up and decay runs had before
    cosine, reference = rates_of("cosine")
    assert cosine == reference and cosine[5] > linear[5]  # cosine decays slower at first


class Squares(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, input_ids):
        return SimpleNamespace(loss=self.linear(input_ids).pow(2).sum() * 100)


@pytest.mark.parametrize("max_norm", [0.0, 1e-3])
def test_gradients_are_clipped_to_max_grad_norm_before_the_step(max_norm):
    from contextlib import nullcontext

    from accelerate import Accelerator

    from peftbench.run.training import _step

    model, norms = Squares(), []

    class Recording(torch.optim.SGD):
        def step(self, closure=None):
            norms.append(torch.cat([p.grad.view(-1) for p in model.parameters()]).norm().item())
            return super().step(closure)

    run = SimpleNamespace(
        model=model, optimizer=Recording(model.parameters(), lr=0.0),
        hp={"max_grad_norm": max_norm}, accelerator=Accelerator(cpu=True),
        policy=SimpleNamespace(autocast=nullcontext), scheduler=SimpleNamespace(step=lambda: None),
        method=SimpleNamespace(on_step=lambda model, step: None),
    )  # fmt: skip
    _step(run, {"input_ids": torch.ones(2, 4)}, 0)
    if max_norm:
        assert norms == [pytest.approx(max_norm, rel=1e-4)]
    else:
        assert norms[0] > 1.0  # untouched
