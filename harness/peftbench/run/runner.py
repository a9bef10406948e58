"""One run: load, adapt, train for a fixed budget, evaluate, count, write one result record.

Every outcome of the combination becomes a record: ``ok``, or ``oom`` / ``unsupported`` /
``diverged`` / ``failed`` with a message, so a sweep goes on past a failed combination. What
says that the environment or the harness is broken (an import error, unreadable tokenized data,
a model whose files cannot be found, a record that fails its own schema) is not a result: it
raises :class:`HarnessError`, no record is written, and the job fails loudly. An interrupted
process (a signal) leaves no record either, and then Snakemake reruns the job.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import platform
import shutil
import time
import traceback
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

from peftbench import __version__
from peftbench.planning.estimates import expected_memory, matmul_params
from peftbench.planning.feasibility import unsupported_reason
from peftbench.planning.spec import RunSpec, write_spec
from peftbench.plugin.backends import MissingBackendError
from peftbench.plugin.quantize import BITS, bitsandbytes, quantize_linears, quantized_parameters
from peftbench.plugin.registry import METHODS, MODELS, TASKS
from peftbench.plugin.task import Head
from peftbench.records.predictions import PREDICTIONS_FILE, write_predictions
from peftbench.records.record import SCHEMA_VERSION, write_record
from peftbench.run.artifacts import ARTIFACT_DIR
from peftbench.run.device import DeviceRequestError, DevicesBusyError
from peftbench.run.distributed import gather_training, is_launched, is_main_process, process_device
from peftbench.run.measure import (
    LossWatch,
    NonFiniteLoss,
    StepTimer,
    format_duration,
    model_flops_utilisation,
    percentile,
    phase,
)
from peftbench.run.precision import Policy

log = logging.getLogger(__name__)

WARMUP_STEPS_EXCLUDED = 3
"""Steps left out of the throughput figures (allocator and kernel warm-up)."""
LOAD_DTYPE = "float32"
"""Every precision loads the model in float32 (:data:`peftbench.plugin.model.LOAD_DTYPES`)."""


class Unsupported(Exception):
    """The combination cannot run (method × architecture, precision × device)."""


class HarnessError(RuntimeError):
    """The environment or the harness is broken, not the combination: no record is written."""


def empty_record(spec: RunSpec, command: str) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": spec.run_id,
        "spec": spec.to_dict(),
        "status": {"code": "ok", "message": ""},
        "params": {},
        "metrics": {},
        "memory": {},
        "throughput": {},
        "timing": {"started_at": dt.datetime.now(dt.timezone.utc).isoformat()},
        "training": {},
        "provenance": provenance(command),
    }


def provenance(command: str) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    versions = {"python": platform.python_version(), "peftbench": __version__}
    for package in ("torch", "transformers", "peft", "datasets", "evaluate", "accelerate"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    versions["cuda"] = torch.version.cuda
    from peftbench.planning.codehash import git_commit

    return {
        "command": command,
        "versions": versions,
        "device": {},
        "host": platform.node(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "code_hash": None,
        "data_fingerprint": None,
        "model_fingerprint": None,
    }


def classify_failure(error: BaseException) -> tuple[str, str]:
    """Status code and message for an exception raised during a run."""
    import torch

    text = f"{type(error).__name__}: {error}"
    if isinstance(error, (Unsupported, MissingBackendError)):
        return "unsupported", str(error)
    if isinstance(error, NonFiniteLoss):
        return "diverged", str(error)
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in str(
        error
    ):
        return "oom", text
    return "failed", text + "\n" + "".join(traceback.format_tb(error.__traceback__)[-3:])


def execute(
    spec: RunSpec,
    out_dir: str | Path,
    tokenized_dir: str | None = None,
    threads: int | None = None,
    command: str = "",
    lock_dir: str | Path | None = None,
    save_artifacts: bool = False,
) -> dict[str, Any]:
    """Run ``spec`` and write ``out_dir/result.json`` (beside its ``spec.json``); return the
    record whatever the outcome of the combination. ``save_artifacts`` also keeps the trained
    method and head in ``out_dir/artifact/`` (:mod:`peftbench.run.artifacts`); it changes neither
    the spec nor the result."""
    from peftbench.planning.codehash import code_hash

    write_spec(out_dir, spec)  # the contract beside the record (kept if it already holds it)
    for kept in (PREDICTIONS_FILE, GENERATIONS_FILE):  # never an earlier run's
        (Path(out_dir) / kept).unlink(missing_ok=True)
    shutil.rmtree(Path(out_dir) / ARTIFACT_DIR, ignore_errors=True)
    record = empty_record(spec, command)
    record["provenance"]["code_hash"] = code_hash(spec.model, spec.method, spec.task)
    try:
        _train_and_evaluate(spec, record, out_dir, tokenized_dir, threads, lock_dir, save_artifacts)
    except DevicesBusyError:  # no free GPU is not a result of the run: the job fails, reruns
        raise
    except DeviceRequestError as error:  # a GPU asked for where there is none: a broken host
        raise HarnessError(str(error)) from error
    except MissingBackendError as error:  # an optional package this combination needs
        record["status"] = {"code": "unsupported", "message": str(error)}
        record["metrics"] = {}
    except ImportError as error:  # a broken environment is not a result
        raise HarnessError(f"{type(error).__name__}: {error}") from error
    except Exception as error:  # every failure of the combination is data; signals are not caught
        if is_launched() and not isinstance(error, Unsupported):  # ranks may wait on each other
            raise  # the launcher ends every rank: the job fails, no record (docs/cluster.md)
        code, message = classify_failure(error)
        record["status"] = {"code": code, "message": message}
        record["metrics"] = {}
    record["timing"]["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
    if is_main_process():  # one record per run, however many processes trained
        write_record(Path(out_dir) / "result.json", record)
    return record


def _train_and_evaluate(
    spec, record, out_dir, tokenized_dir, threads, lock_dir, save_artifacts=False
) -> None:
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DataLoaderConfiguration, set_seed

    hp = spec.hparams
    method, task, source = METHODS.get(spec.method), TASKS.get(spec.task), MODELS.get(spec.model)
    if threads:
        torch.set_num_threads(threads)
    device = process_device(lock_dir, spec.gpus)
    record["provenance"]["device"] = describe_device(device, threads)
    policy = Policy.for_run(hp["precision"], device)  # "auto": what the device computes natively
    precision = policy.precision
    record["provenance"]["precision"] = {"ran": precision, "reason": policy.reason}
    reason = unsupported_reason(spec, device.split(":")[0])  # from the meta build: no weights
    if reason:
        raise Unsupported(reason)
    if precision in BITS:  # before any expensive work: the backend this precision needs
        bitsandbytes(precision)
    if device.startswith("cuda"):
        torch.cuda.set_device(device)

    try:
        data, meta = _load_data(spec, tokenized_dir)
    except Exception as error:  # the task's data is an input of every run, not a result
        message = f"task data of {spec.run_id}: {type(error).__name__}: {error}"
        raise HarnessError(message) from error
    record["provenance"]["data_fingerprint"] = meta["data_fingerprint"]
    if len(data["train"]) < hp["batch_size"]:
        raise Unsupported(
            f"batch_size={hp['batch_size']} exceeds the {len(data['train'])} training examples"
        )

    set_seed(spec.seed)
    with phase("load", device, record):
        try:
            loaded = source.load(num_labels=task.num_labels, head=task.head, dtype=LOAD_DTYPE)
        except OSError as error:  # transformers' word for weights or files it cannot find
            raise HarnessError(f"model {spec.model!r} cannot be loaded: {error}") from error
    record["provenance"]["model_fingerprint"] = loaded.fingerprint
    record["provenance"]["load_dtype"] = LOAD_DTYPE
    info = loaded.info
    record["provenance"]["pooling"] = info.pooling
    reason = method.unsupported_reason(info)  # again: a model without a readable config
    if reason:
        raise Unsupported(reason)

    from peftbench.planning.counting import adapt, count_static, count_trained

    # Merging into a quantized base would requantize it and change the outputs: not done.
    mergeable = precision not in BITS
    if precision in BITS:  # the quantized model is the base every count compares against
        quantize_linears(loaded.model, info, BITS[precision], device)  # there, once
    policy.prepare_base(loaded.model)  # bf16: linear weights rounded; the base counts compare to
    language_model = Head.of(task.head).language_model
    tokenizer = source.tokenizer() if language_model else None  # generation, forgetting, serving
    if language_model:  # forgetting: the base's cross-entropy on general text, before adapting
        from peftbench.run.forgetting import general_text_sample

        sample = general_text_sample()
        with phase("forget", device, record):
            base_ce = _general_text_ce(
                loaded.model.to(device), tokenizer, sample, hp, device, policy
            )
    model, base = adapt(loaded.model, method, hp, info, keep_values=True)
    policy.prepare_adapted(model)  # bf16: frozen linears stored in bf16, trainables fp32 masters
    trained_quantized = [
        n for n in quantized_parameters(model) if model.get_parameter(n).requires_grad
    ]
    if trained_quantized:
        raise Unsupported(
            f"{spec.method} trains base weights ({trained_quantized[0]}, ...), which precision "
            f"{precision} stores quantized"
        )
    record["params"] = count_static(model, method, info, base, mergeable=mergeable)

    # One run per call: forget the precision an earlier run in this process set.
    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(
        cpu=device == "cpu",
        mixed_precision="fp16" if precision == "fp16" else "no",
        dataloader_config=DataLoaderConfiguration(split_batches=True),  # batch_size per step
    )  # bf16 autocasts through the policy
    train_loader, eval_loader, dev_loader = _loaders(data, source, hp, spec.seed, task.head)
    if task.head == Head.GENERATION:
        score = partial(
            _generate,
            task=task,
            method=method,
            tokenizer=tokenizer,
            max_new_tokens=hp["max_new_tokens"] or task.max_new_tokens,
            batch_size=hp["eval_batch_size"],
            autocast=policy.autocast,
        )
    else:
        score = partial(
            _predict,
            answers=meta.get("answer_ids"),
            batch_size=hp["eval_batch_size"],
            autocast=policy.autocast,
        )
    optimizer = torch.optim.AdamW(
        _param_groups(model, method, info, hp),
        lr=hp["lr"],
        weight_decay=hp["weight_decay"],
        **policy.optimizer_options(),
    )
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(
        optimizer, math.ceil(hp["warmup_ratio"] * hp["steps"]), hp["steps"]
    )
    model, optimizer, train_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, scheduler
    )

    with phase("train", device, record):
        losses, step_times, samples, tokens = _train(
            model, optimizer, scheduler, train_loader, accelerator, method, hp, device, policy
        )
    # Evaluation holds the trained model only: AdamW's state, the scheduler and the training
    # phase's cached blocks are released before the eval phase resets its peaks.
    optimizer, scheduler, train_loader = accelerator.free_memory(optimizer, scheduler, train_loader)
    timed = step_times[WARMUP_STEPS_EXCLUDED:] or step_times
    timed_samples = samples[WARMUP_STEPS_EXCLUDED:] or samples
    timed_tokens = tokens[WARMUP_STEPS_EXCLUDED:] or tokens
    record["training"] = {
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "losses": losses,
        "steps": len(losses),
    }
    record["throughput"].update(
        {
            "train_samples_per_s": sum(timed_samples) / sum(timed),
            "train_tokens_per_s": sum(timed_tokens) / sum(timed),
            "train_step_median_s": percentile(timed, 0.5),
            "train_step_p90_s": percentile(timed, 0.9),
            "train_steps_timed": len(timed),
        }
    )
    if accelerator.num_processes > 1:  # every rank's figures; the main process alone goes on
        gather_training(accelerator, model, record)
        if not accelerator.is_main_process:
            return
        model = accelerator.unwrap_model(model)  # no DDP collectives while the others are gone

    with phase("eval", device, record):
        predictions, references, batch_times, eval_tokens = score(
            model, eval_loader, accelerator, device
        )
    generated = getattr(predictions, "texts", None)  # generation: the text before extraction
    record["throughput"].update(
        {
            "eval_samples_per_s": len(references) / sum(batch_times),
            "eval_tokens_per_s": eval_tokens / sum(batch_times),
            "eval_batch_latency_median_s": percentile(batch_times, 0.5),
            "eval_batch_latency_p90_s": percentile(batch_times, 0.9),
        }
    )
    with phase("dev", device, record):  # hyperparameters are selected on this split's score
        dev_predictions, dev_references, _, _ = score(model, dev_loader, accelerator, device)
    if save_artifacts and is_main_process():  # the model just evaluated, before counts merge it
        from peftbench.run.artifacts import save_artifact

        record["artifact"] = save_artifact(
            out_dir,
            accelerator.unwrap_model(model),
            method,
            info,
            spec,
            fingerprint=loaded.fingerprint,
            precision=precision,
        )
    record["memory"]["expected"] = expected_memory(model, hp)
    if language_model:  # the tuned model on the same text, as it was evaluated
        from peftbench.run.forgetting import MAX_LENGTH, forgetting_record

        with phase("forget", device, record):  # both passes' seconds (the base's, then this)
            seconds = record["timing"]["forget_s"]
            tuned_ce = _general_text_ce(
                accelerator.unwrap_model(model), tokenizer, sample, hp, device, policy
            )
        record["timing"]["forget_s"] += seconds
        record["forgetting"] = forgetting_record(base_ce, tuned_ce, tokenizer, sample, MAX_LENGTH)
    policy.restore(model)  # merges and counts on fp32 storage, exactly as at fp32
    if language_model:  # serving cost, unmerged and merged, on fp32 storage alike
        with phase("serve", device, record):
            record["serving"] = _serving_cost(
                accelerator.unwrap_model(model), method, tokenizer, data, hp, device, policy,
                mergeable=mergeable,
            )  # fmt: skip
    with phase("count", device, record):  # stored, changed, update rank: needs the trained model
        record["params"].update(
            count_trained(
                accelerator.unwrap_model(model),
                method,
                info,
                base,
                inplace=True,
                mergeable=mergeable,
            )
        )
    if device.startswith("cuda"):
        record["throughput"].update(
            model_flops_utilisation(
                record["throughput"]["train_tokens_per_s"],
                matmul_params(model),
                record["params"]["trainable"],
                record["provenance"]["device"]["name"],
                precision,
            )
        )

    from peftbench.plugin.metrics import chance_metrics, compute_metrics

    if task.head == Head.GENERATION:  # the trivial predictor: the commonest training answer
        from peftbench.plugin.metrics import baseline_metrics

        chance = baseline_metrics(task.metrics, list(data["train"]["reference"]), references)
    else:  # the majority class
        chance = chance_metrics(task.metrics, class_labels(data["train"]), references)
    record["metrics"] = {
        "primary": task.primary_metric,
        "split": "validation",
        "num_examples": len(references),
        "values": compute_metrics(task.metrics, predictions, references),
        "chance": chance,
        "dev": {
            "num_examples": len(dev_references),
            "values": compute_metrics(task.metrics, dev_predictions, dev_references),
        },
    }
    positions = eval_positions(len(data["validation"]), hp["max_eval_examples"])
    if task.head == Head.GENERATION:  # kept whole; the paired tests compare exact matches
        write_generations(out_dir, spec.run_id, positions, generated, predictions, references)
        predictions = [
            int(p.strip() == r.strip()) for p, r in zip(predictions, references, strict=True)
        ]
        references = [1] * len(references)
    write_predictions(out_dir, spec.run_id, predictions, references, example_ids=positions)


def describe_device(device: str, threads: int | None) -> dict[str, Any]:
    import torch

    described: dict[str, Any] = {
        "type": device.split(":")[0],
        "id": device,
        "threads": torch.get_num_threads(),
    }
    if device.startswith("cuda"):
        described["name"] = torch.cuda.get_device_name(device)
    else:
        described["name"] = platform.processor() or platform.machine()
    return described


def _load_data(spec: RunSpec, tokenized_dir: str | None):
    """The tokenized splits and their metadata (:func:`peftbench.run.data.tokenize_task`)."""
    from peftbench.run.data import load_tokenized, tokenize_task

    if not tokenized_dir:
        return tokenize_task(spec.task, spec.model, spec.hparams["max_length"], spec.data_dir)
    data, meta = load_tokenized(tokenized_dir)
    if meta["task"] != spec.task or meta["tokenizer"] != MODELS.get(spec.model).tokenizer_key:
        raise ValueError(
            f"{tokenized_dir} holds {meta['task']} for {meta['tokenizer']}, not this run's"
        )
    if "dev" not in data or meta.get("head", Head.CLASSIFICATION) != TASKS.get(spec.task).head:
        raise ValueError(f"{tokenized_dir} was made by an older peftbench: tokenize it again")
    if meta["max_length"] != spec.hparams["max_length"]:
        raise ValueError(
            f"{tokenized_dir} was cut at {meta['max_length']} tokens, "
            f"this run wants {spec.hparams['max_length']}"
        )
    return data, meta


CLASS_COLUMNS = ("class_label", "labels")
"""Where a tokenized split keeps the class: ``class_label`` when ``labels`` holds answer
tokens (``causal-lm`` tasks), else ``labels``."""
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")


def class_labels(split) -> list[int]:
    column = next(c for c in CLASS_COLUMNS if c in split.column_names)
    return list(split[column])


def _param_groups(model, method, info, hp) -> list[dict[str, Any]]:
    """The trainable parameters as AdamW groups: the task head at ``head_lr`` when set."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not hp["head_lr"]:
        return [{"params": [p for _, p in trainable]}]
    head = [p for n, p in trainable if method.is_head(n, info)]
    rest = [p for n, p in trainable if not method.is_head(n, info)]
    groups = [{"params": rest}, {"params": head, "lr": hp["head_lr"]}]
    return [group for group in groups if group["params"]]


def _loaders(data, source, hp, seed, head):
    import torch
    from torch.utils.data import DataLoader
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

    tokenizer = source.tokenizer()
    if head in (Head.CAUSAL_LM, Head.GENERATION):  # pads the reply tokens in ``labels`` with -100
        collate = DataCollatorForSeq2Seq(tokenizer, padding=True)
    else:
        collate = DataCollatorWithPadding(tokenizer)
    generator = torch.Generator().manual_seed(seed)
    train_rows = data["train"]
    if head == Head.GENERATION:  # the text columns stay for scoring, not for the collator
        train_rows = train_rows.remove_columns(list(GENERATION_TEXT_COLUMNS))
    train = DataLoader(
        train_rows,
        batch_size=hp["batch_size"],
        shuffle=True,
        collate_fn=collate,
        generator=generator,
        drop_last=True,
    )
    if head == Head.GENERATION:  # rows, not batches: generation pads its prompts on the left
        evaluation = [eval_subset(data[split], hp["max_eval_examples"]) for split in SCORED]
        return train, *evaluation
    evaluation = [
        DataLoader(
            eval_subset(data[split], hp["max_eval_examples"]),
            batch_size=hp["eval_batch_size"],
            collate_fn=collate,
        )
        for split in SCORED
    ]
    return train, *evaluation


SCORED = ("validation", "dev")
GENERATION_TEXT_COLUMNS = ("reference", "truncated")
"""Columns of a tokenized ``generation`` split that are not model inputs."""


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


def _train(model, optimizer, scheduler, loader, accelerator, method, hp, device, policy):
    """Train for ``hp["steps"]`` optimizer steps, cycling over the data; per-step measurements.
    No step waits for the device: steps are timed by :class:`StepTimer`, losses and token counts
    stay on the device until the end, and :class:`LossWatch` checks the losses for NaN or inf
    at each progress line. Logs progress about ten times (every ``steps // 10`` steps, and at
    the last): the step, the mean loss and the samples/s since the previous line, the time
    elapsed and the time left."""
    import torch

    steps = hp["steps"]
    every = max(1, steps // 10)
    model.train()
    timer, watch = StepTimer(device), LossWatch(every)
    samples, tokens = [], []
    batches = iter(loader)
    began = last_time = time.perf_counter()
    last_step = 0
    try:
        for step in range(steps):
            try:
                batch = next(batches)
            except StopIteration:
                batches = iter(loader)
                batch = next(batches)
            timer.start()
            with policy.autocast():  # the forward only; backward runs outside autocast
                loss = model(**{k: v for k, v in batch.items() if k in MODEL_INPUTS}).loss
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            method.on_step(model, step + 1)
            optimizer.zero_grad(set_to_none=True)
            timer.stop()
            watch.add(loss)  # every `every` steps: NonFiniteLoss naming the first bad step
            samples.append(int(batch["labels"].shape[0]))
            tokens.append(batch["attention_mask"].sum())
            done = step + 1
            if done % every == 0 or done == steps:
                mean = watch.mean_since(last_step)  # the sum just read: no further sync
                now = time.perf_counter()
                elapsed = now - began
                log.info(
                    "step %d/%d  loss %.4f  %.1f samples/s  elapsed %s  eta %s",
                    done,
                    steps,
                    mean,
                    sum(samples[last_step:]) / (now - last_time),
                    format_duration(elapsed),
                    format_duration(elapsed / done * (steps - done)),
                )
                last_step, last_time = done, now
    except Exception:
        watch.check()  # a loss that went NaN before the failure: the run diverged
        raise
    return watch.values(), timer.seconds(), samples, torch.stack(tokens).tolist()


def _predict(model, loader, accelerator, device, answers=None, batch_size=64, autocast=nullcontext):
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
    return predictions, references, timer.seconds(), tokens


class Answers(list):
    """The answers extracted from a generation task's replies, with the replies as ``texts``."""

    texts: list[str]


def _generate(
    model, rows, accelerator, device, task, method, tokenizer, max_new_tokens, batch_size, autocast
):
    """A generation task's predictions: each row's prompt continued greedily
    (:func:`peftbench.run.generation.generate`: at most ``max_new_tokens``, cut at the task's stop
    strings), :meth:`Task.extract` applied; the references; per-batch generation seconds; and
    the tokens generated."""
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
    answers = Answers(task.extract(text) for text in out.texts)
    answers.texts = list(out.texts)
    return answers, list(rows["reference"]), out.batch_seconds, sum(out.new_tokens)


GENERATIONS_FILE = "generations.json"


def write_generations(out_dir, run_id, positions, texts, answers, references) -> None:
    """``generations.json`` beside the record: per scored validation row, its position, the
    generated text, the answer extracted from it and the reference."""
    from peftbench.records.files import write_json_atomic

    rows = [
        {"example_id": i, "text": t, "answer": a, "reference": r}
        for i, t, a, r in zip(positions, texts, answers, references, strict=True)
    ]
    write_json_atomic(Path(out_dir) / GENERATIONS_FILE, {"run_id": run_id, "rows": rows})


def _general_text_ce(model, tokenizer, sample, hp, device, policy) -> float:
    """Mean cross-entropy of ``model`` on the forgetting sample (:mod:`~.forgetting`)."""
    from peftbench.run.forgetting import MAX_LENGTH, mean_cross_entropy

    return mean_cross_entropy(
        model,
        tokenizer,
        sample,
        MAX_LENGTH,
        hp["eval_batch_size"],
        device,
        policy.autocast,
    )


def _serving_cost(model, method, tokenizer, data, hp, device, policy, mergeable) -> dict[str, Any]:
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

    rows = eval_subset(data["validation"], hp["max_eval_examples"])
    head = rows.select(range(min(len(rows), SERVING_PROMPTS)))
    prompts = serving_prompts(
        [list(ids[:n]) for ids, n in zip(head["input_ids"], head["prompt_length"], strict=True)],
        len(head),
    )
    measure = partial(
        serving_latency,
        tokenizer=tokenizer,
        prompts=prompts,
        new_tokens=SERVING_NEW_TOKENS,
        device=device,
        autocast=policy.autocast,
    )
    unmerged = measure(model)
    merged_model = method.merge(copy.deepcopy(model)) if mergeable else None
    merged = measure(merged_model) if merged_model is not None else None
    del merged_model
    return serving_record(unmerged, merged, len(prompts), SERVING_NEW_TOKENS)
