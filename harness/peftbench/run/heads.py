"""What differs by task head, chosen once per run: one :class:`TaskHead` per
:class:`~peftbench.plugin.task.Head` (:func:`for_head`), as lm-evaluation-harness dispatches
on a request's type instead of branching on it.

A head says how its task's rows are collated and batched (:func:`loaders`), how a split is
scored (:meth:`TaskHead.score`: class predictions, or answers extracted from generations), what
the chance level is (:meth:`TaskHead.chance`), which files the run writes beside its record
(:meth:`TaskHead.write_outputs`) and, for the heads that pose the task to the pretrained
language-model head, what else the run measures (forgetting and serving:
:class:`LanguageModelHead`).
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from peftbench.plugin.task import Head
from peftbench.records.predictions import write_predictions
from peftbench.run.measure import StepTimer, phase

if TYPE_CHECKING:
    from peftbench.run.state import RunState

GENERATIONS_FILE = "generations.json"
SCORED = ("validation", "dev")
"""The splits a run scores, in order."""
GENERATION_TEXT_COLUMNS = ("reference", "truncated")
"""Columns of a tokenized ``generation`` split that are not model inputs."""
CLASS_COLUMNS = ("class_label", "labels")
"""Where a tokenized split keeps the class: ``class_label`` when ``labels`` holds answer
tokens (``causal-lm`` tasks), else ``labels``."""
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")
EVAL_SAMPLE_SEED = 0
"""``max_eval_examples`` draws the same rows for every run, seed and setting."""


def eval_positions(size: int, limit: int) -> list[int]:
    """The rows of an evaluation split of ``size`` rows that are scored: ``limit`` of them
    drawn at random with :data:`EVAL_SAMPLE_SEED` (in their original order), or all of them
    when ``limit`` is 0 or not smaller. Splits are often ordered by class: the first rows would
    hold few of the classes."""
    if not limit or limit >= size:
        return list(range(size))
    import random

    return sorted(random.Random(EVAL_SAMPLE_SEED).sample(range(size), limit))


def eval_subset(rows, limit: int):
    """The rows of ``rows`` that :func:`eval_positions` picks (``rows`` itself when all)."""
    if not limit or limit >= len(rows):
        return rows
    return rows.select(eval_positions(len(rows), limit))


def class_labels(split) -> list[int]:
    column = next(c for c in CLASS_COLUMNS if c in split.column_names)
    return list(split[column])


class Scored(NamedTuple):
    """One scored split: predictions (class labels, or extracted answers), references, the
    seconds of each timed batch, the tokens read (classes) or generated (generation), and the
    generated texts before extraction (generation only)."""

    predictions: list[Any]
    references: list[Any]
    batch_seconds: list[float]
    tokens: int
    texts: list[str] | None = None


def loaders(data, source, hp: dict[str, Any], seed: int, head: TaskHead):
    """The shuffled training loader (seeded with ``seed``; drops the last partial batch) and
    the validation and dev splits as ``head`` scores them (at most ``max_eval_examples`` rows:
    :func:`eval_subset`)."""
    import torch
    from torch.utils.data import DataLoader

    collate = head.collator(source.tokenizer())
    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(
        head.train_rows(data["train"]),
        batch_size=hp["batch_size"],
        shuffle=True,
        collate_fn=collate,
        generator=generator,
        drop_last=True,
    )
    evaluation = [
        head.evaluation(eval_subset(data[split], hp["max_eval_examples"]), hp, collate)
        for split in SCORED
    ]
    return train, *evaluation


def predict(model, loader, accelerator, device, answers=None, batch_size=64, autocast=nullcontext):
    """Predictions, references, per-batch forward seconds (the batch's copy to the device
    excluded; :class:`StepTimer`) and non-padding tokens (with ``answers``, the token ids of
    each class's answer: the class whose answer the model finds likeliest after the prompt,
    :func:`peftbench.run.lm_scoring.answer_log_likelihoods`, which builds and copies its candidates
    inside the timed span)."""
    import torch

    from peftbench.run.lm_scoring import answer_log_likelihoods

    model.eval()
    predictions, references, tokens = [], [], 0
    timer = StepTimer(device)
    with torch.no_grad(), autocast():
        for batch in loader:
            if answers:
                labels = batch["class_label"]
                timer.start()
                scores = answer_log_likelihoods(model, batch, answers, batch_size)
            else:
                labels = batch["labels"]
                inputs = {
                    k: v.to(accelerator.device)
                    for k, v in batch.items()
                    if k in MODEL_INPUTS and k != "labels"
                }
                timer.start()
                scores = model(**inputs).logits
            timer.stop()
            predictions += scores.argmax(-1).tolist()
            references += labels.tolist()
            tokens += int(batch["attention_mask"].sum())
    return Scored(predictions, references, timer.seconds(), tokens)


class TaskHead:
    """A sequence-classification head on the backbone (``classification``): rows padded by
    the tokenizer, batches of ``eval_batch_size``, the argmax of the logits predicted, chance
    the majority class. Subclasses change what differs."""

    head = Head.CLASSIFICATION
    language_model = False
    """Whether the task is posed to the pretrained language-model head (a causal LM)."""

    def collator(self, tokenizer):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def train_rows(self, split):
        """The training rows as the collator takes them."""
        return split

    def evaluation(self, rows, hp: dict[str, Any], collate):
        """An evaluation split as :meth:`score` reads it: batches of ``eval_batch_size``."""
        from torch.utils.data import DataLoader

        return DataLoader(rows, batch_size=hp["eval_batch_size"], collate_fn=collate)

    def score(self, run: RunState, model, split) -> Scored:
        """``model``'s predictions on ``split`` (one of :data:`SCORED`, as :meth:`evaluation`
        made it)."""
        hp = run.hp
        return predict(
            model, split, run.accelerator, run.device, None, hp["eval_batch_size"],
            run.policy.autocast,
        )  # fmt: skip

    def chance(self, run: RunState, references: list[Any]) -> dict[str, float]:
        """The metrics of the majority class of the training split."""
        from peftbench.plugin.metrics import chance_metrics

        train = class_labels(run.data["train"])
        return chance_metrics(run.task.metrics, train, references)

    def write_outputs(self, run: RunState, positions: list[int]) -> None:
        """The files beside the record: ``predictions.json`` (the paired tests' input)."""
        scored = run.scored
        write_predictions(
            run.out_dir, run.spec.run_id, scored.predictions, scored.references,
            example_ids=positions,
        )  # fmt: skip

    def before_adapt(self, run: RunState) -> None:
        """Measurements of the base model before the method adapts it: none here."""

    def after_eval(self, run: RunState) -> None:
        """Measurements of the tuned model at its training storage: none here."""

    def after_restore(self, run: RunState) -> None:
        """Measurements of the tuned model on fp32 storage (:meth:`Policy.restore`): none."""


class LanguageModelHead(TaskHead):
    """A task posed to the pretrained language-model head: the reply tokens in ``labels``
    padded with -100; forgetting (the base's and the tuned model's cross-entropy on general
    text) and serving cost (generation latency, unmerged and merged) measured."""

    language_model = True

    def collator(self, tokenizer):
        from transformers import DataCollatorForSeq2Seq

        return DataCollatorForSeq2Seq(tokenizer, padding=True)

    def before_adapt(self, run: RunState) -> None:
        """The tokenizer, and the base's cross-entropy on the general-text sample."""
        from peftbench.run.forgetting import general_text_sample

        run.tokenizer = run.source.tokenizer()  # generation, forgetting, serving
        run.forget["sample"] = general_text_sample(run.hp["forgetting_texts"])
        with phase("forget", run.device, run.record):
            model = run.loaded.model.to(run.device)
            run.forget["base_ce"] = general_text_ce(run, model)

    def after_eval(self, run: RunState) -> None:
        """The tuned model's cross-entropy on the same text, as it was evaluated."""
        from peftbench.run.forgetting import MAX_LENGTH, forgetting_record

        record = run.record
        with phase("forget", run.device, record):  # both passes' seconds (the base's, then this)
            seconds = record["timing"]["forget_s"]
            tuned_ce = general_text_ce(run, run.unwrapped())
        record["timing"]["forget_s"] += seconds
        record["forgetting"] = forgetting_record(
            run.forget["base_ce"], tuned_ce, run.tokenizer, run.forget["sample"], MAX_LENGTH
        )

    def after_restore(self, run: RunState) -> None:
        """Serving cost, unmerged and merged, on fp32 storage alike."""
        with phase("serve", run.device, run.record):
            run.record["serving"] = serving_cost(run, run.unwrapped())


class CausalLMHead(LanguageModelHead):
    """``causal-lm``: each class's answer text scored after the prompt; the likeliest class
    is the prediction (:mod:`peftbench.run.lm_scoring`)."""

    head = Head.CAUSAL_LM

    def score(self, run: RunState, model, split) -> Scored:
        hp = run.hp
        return predict(
            model, split, run.accelerator, run.device, run.meta.get("answer_ids"),
            hp["eval_batch_size"], run.policy.autocast,
        )  # fmt: skip


class GenerationHead(LanguageModelHead):
    """``generation``: trained on the reference completion; evaluated on the text it
    generates greedily from each prompt, scored after :meth:`Task.extract`; chance the
    commonest training answer; ``generations.json`` kept, and ``predictions.json`` holds 1/0
    exact matches (the paired tests compare those)."""

    head = Head.GENERATION

    def train_rows(self, split):
        return split.remove_columns(list(GENERATION_TEXT_COLUMNS))  # kept for scoring only

    def evaluation(self, rows, hp: dict[str, Any], collate):
        return rows  # rows, not batches: generation pads its prompts on the left

    def score(self, run: RunState, model, split) -> Scored:
        hp = run.hp
        return generate_answers(
            model, split, run.accelerator, run.device, task=run.task, method=run.method,
            tokenizer=run.tokenizer,
            max_new_tokens=hp["max_new_tokens"] or run.task.max_new_tokens,
            batch_size=hp["eval_batch_size"], autocast=run.policy.autocast,
        )  # fmt: skip

    def chance(self, run: RunState, references: list[Any]) -> dict[str, float]:
        from peftbench.plugin.metrics import baseline_metrics

        train = list(run.data["train"]["reference"])
        return baseline_metrics(run.task.metrics, train, references)

    def write_outputs(self, run: RunState, positions: list[int]) -> None:
        scored = run.scored
        write_generations(
            run.out_dir, run.spec.run_id, positions, scored.texts, scored.predictions,
            scored.references,
        )  # fmt: skip
        matches = [
            int(p.strip() == r.strip())
            for p, r in zip(scored.predictions, scored.references, strict=True)
        ]
        write_predictions(
            run.out_dir, run.spec.run_id, matches, [1] * len(matches), example_ids=positions
        )


HEADS: dict[Head, type[TaskHead]] = {h.head: h for h in (TaskHead, CausalLMHead, GenerationHead)}


def for_head(head: str) -> TaskHead:
    """The strategy of the head named ``head`` (an unknown name raises naming the valid ones)."""
    return HEADS[Head.of(head)]()


def generate_answers(
    model, rows, accelerator, device, task, method, tokenizer, max_new_tokens, batch_size, autocast
) -> Scored:
    """A generation task's predictions: each row's prompt continued greedily
    (:func:`peftbench.run.generation.generate`: at most ``max_new_tokens``, cut at the task's stop
    strings), :meth:`Task.extract` applied; the references; per-batch generation seconds; the
    tokens generated; and the generated texts."""
    from peftbench.run.generation import generate

    prompts = [
        list(ids[:length])
        for ids, length in zip(rows["input_ids"], rows["prompt_length"], strict=True)
    ]
    model.eval()
    out = generate(
        accelerator.unwrap_model(model),
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        stop=task.stop,
        batch_size=batch_size,
        device=device,
        autocast=autocast,
        same_length=method.equal_length_batches,
    )
    answers = [task.extract(text) for text in out.texts]
    return Scored(
        answers, list(rows["reference"]), out.batch_seconds, sum(out.new_tokens), list(out.texts)
    )


def write_generations(out_dir, run_id, positions, texts, answers, references) -> None:
    """``generations.json`` beside the record: per scored validation row, its position, the
    generated text, the answer extracted from it and the reference."""
    from peftbench.records.files import write_json_atomic

    rows = [
        {"example_id": i, "text": t, "answer": a, "reference": r}
        for i, t, a, r in zip(positions, texts, answers, references, strict=True)
    ]
    write_json_atomic(Path(out_dir) / GENERATIONS_FILE, {"run_id": run_id, "rows": rows})


def general_text_ce(run: RunState, model) -> float:
    """Mean cross-entropy of ``model`` on the forgetting sample (:mod:`~.forgetting`)."""
    from peftbench.run.forgetting import MAX_LENGTH, mean_cross_entropy

    return mean_cross_entropy(
        model,
        run.tokenizer,
        run.forget["sample"],
        MAX_LENGTH,
        run.hp["eval_batch_size"],
        run.device,
        run.policy.autocast,
    )


def serving_cost(run: RunState, model) -> dict[str, Any]:
    """Generation latency per token of the trained model and of its merge (where the method
    merges and the base is not quantized), on the same first validation prompts
    (:func:`peftbench.run.generation.serving_latency`). The merge runs on a copy: the counts merge
    the model itself afterwards."""
    import copy

    from peftbench.run.generation import (
        SERVING_NEW_TOKENS,
        SERVING_PROMPTS,
        serving_latency,
        serving_prompts,
        serving_record,
    )

    rows = eval_subset(run.data["validation"], run.hp["max_eval_examples"])
    head = rows.select(range(min(len(rows), SERVING_PROMPTS)))
    prompts = serving_prompts(
        [list(ids[:n]) for ids, n in zip(head["input_ids"], head["prompt_length"], strict=True)],
        len(head),
    )
    measure = partial(
        serving_latency,
        tokenizer=run.tokenizer,
        prompts=prompts,
        new_tokens=SERVING_NEW_TOKENS,
        device=run.device,
        autocast=run.policy.autocast,
    )
    unmerged = measure(model)
    merged_model = run.method.merge(copy.deepcopy(model)) if run.mergeable else None
    merged = measure(merged_model) if merged_model is not None else None
    del merged_model
    return serving_record(unmerged, merged, len(prompts), SERVING_NEW_TOKENS)
