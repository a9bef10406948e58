"""One run: load, adapt, train for a fixed budget, evaluate, count, write one result record.

Every outcome of the combination becomes a record: ``ok``, or ``oom`` / ``unsupported`` /
``diverged`` / ``failed`` with a message, so a sweep goes on past a failed combination. What
says that the environment or the harness is broken (an import error, unreadable tokenized data,
a model whose files cannot be found, a record that fails its own schema) is not a result: it
raises :class:`HarnessError`, no record is written, and the job fails loudly. An interrupted
process (a signal) leaves no record either, and then Snakemake reruns the job: from the run's
last checkpoint, where it wrote one (:mod:`peftbench.run.checkpoint`).
"""

from __future__ import annotations

import datetime as dt
import logging
import platform
import shutil
import traceback
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
from peftbench.records.predictions import PREDICTIONS_FILE
from peftbench.records.record import SCHEMA_VERSION, write_record
from peftbench.run import checkpoint
from peftbench.run.artifacts import ARTIFACT_DIR
from peftbench.run.device import DeviceRequestError, DevicesBusyError
from peftbench.run.distributed import gather_training, is_launched, is_main_process, process_device
from peftbench.run.heads import GENERATIONS_FILE, eval_positions, for_head, loaders
from peftbench.run.measure import NonFiniteLoss, model_flops_utilisation, percentile, phase
from peftbench.run.precision import Policy
from peftbench.run.state import RunState
from peftbench.run.training import Trained, optimizer_and_schedule, train

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
    run = RunState(spec, Path(out_dir), record, tokenized_dir, threads, lock_dir, save_artifacts)
    try:
        _train_and_evaluate(run)
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
        checkpoint.remove(run.out_dir)  # spent: a rerun starts over
    return record


def _train_and_evaluate(run: RunState) -> None:
    """The run's phases in order, each over ``run``."""
    _open(run)
    _load_data_of(run)
    _load_model(run)
    _adapt(run)
    _prepare_training(run)
    _resume(run)
    _train_phase(run)
    if run.accelerator.num_processes > 1:  # every rank's figures; the main process alone goes on
        gather_training(run.accelerator, run.model, run.record)
        if not run.accelerator.is_main_process:
            return
        run.model = run.unwrapped()  # no DDP collectives while the others are gone
    _evaluate(run)
    _measure_trained(run)
    _write_metrics(run)


def _open(run: RunState) -> None:
    """Threads, device and precision; what the spec alone shows unsupported is raised."""
    import torch

    spec, record = run.spec, run.record
    run.method, run.task = METHODS.get(spec.method), TASKS.get(spec.task)
    run.source, run.head = MODELS.get(spec.model), for_head(run.task.head)
    if run.threads:
        torch.set_num_threads(run.threads)
    run.device = process_device(run.lock_dir, spec.gpus)
    record["provenance"]["device"] = describe_device(run.device, run.threads)
    run.policy = Policy.for_run(run.hp["precision"], run.device)  # "auto": what runs natively
    record["provenance"]["precision"] = {"ran": run.precision, "reason": run.policy.reason}
    reason = unsupported_reason(spec, run.device.split(":")[0])  # from the meta build
    if reason:
        raise Unsupported(reason)
    if run.precision in BITS:  # before any expensive work: the backend this precision needs
        bitsandbytes(run.precision)
    if run.device.startswith("cuda"):
        torch.cuda.set_device(run.device)


def _load_data_of(run: RunState) -> None:
    """The tokenized splits; unreadable data is a :class:`HarnessError`."""
    try:
        run.data, run.meta = _load_data(run.spec, run.tokenized_dir)
    except Exception as error:  # the task's data is an input of every run, not a result
        message = f"task data of {run.spec.run_id}: {type(error).__name__}: {error}"
        raise HarnessError(message) from error
    run.record["provenance"]["data_fingerprint"] = run.meta["data_fingerprint"]
    batch_size, examples = run.hp["batch_size"], len(run.data["train"])
    if examples < batch_size:
        raise Unsupported(f"batch_size={batch_size} exceeds the {examples} training examples")


def _load_model(run: RunState) -> None:
    """The seeded model load (the ``load`` phase); files that cannot be found are a
    :class:`HarnessError`."""
    from accelerate.utils import set_seed

    spec, task, record = run.spec, run.task, run.record
    set_seed(spec.seed)
    with phase("load", run.device, record):
        try:
            run.loaded = run.source.load(
                num_labels=task.num_labels, head=task.head, dtype=LOAD_DTYPE
            )
        except OSError as error:  # transformers' word for weights or files it cannot find
            raise HarnessError(f"model {spec.model!r} cannot be loaded: {error}") from error
    record["provenance"]["model_fingerprint"] = run.loaded.fingerprint
    record["provenance"]["load_dtype"] = LOAD_DTYPE
    record["provenance"]["pooling"] = run.info.pooling
    reason = run.method.unsupported_reason(run.info)  # again: a model without a readable config
    if reason:
        raise Unsupported(reason)


def _adapt(run: RunState) -> None:
    """The base prepared for the precision and measured by the head, the method applied, the
    static counts taken."""
    from peftbench.planning.counting import adapt, count_static

    model, info = run.loaded.model, run.info
    if run.precision in BITS:  # the quantized model is the base every count compares against
        quantize_linears(model, info, BITS[run.precision], run.device)  # there, once
    run.policy.prepare_base(model)  # bf16: linear weights rounded; the base counts compare to
    run.head.before_adapt(run)  # language-model heads: the base's general-text cross-entropy
    run.model, run.base = adapt(model, run.method, run.hp, info, keep_values=True)
    run.policy.prepare_adapted(run.model)  # bf16: frozen linears in bf16, trainables fp32
    trained_quantized = [
        n for n in quantized_parameters(run.model) if run.model.get_parameter(n).requires_grad
    ]
    if trained_quantized:
        raise Unsupported(
            f"{run.spec.method} trains base weights ({trained_quantized[0]}, ...), which "
            f"precision {run.precision} stores quantized"
        )
    run.record["params"] = count_static(
        run.model, run.method, info, run.base, mergeable=run.mergeable
    )


def _prepare_training(run: RunState) -> None:
    """The accelerator, the loaders, the optimizer and its schedule, prepared."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DataLoaderConfiguration

    # One run per call: forget the precision an earlier run in this process set.
    AcceleratorState._reset_state(reset_partial_state=True)
    run.accelerator = Accelerator(
        cpu=run.device == "cpu",
        mixed_precision="fp16" if run.precision == "fp16" else "no",
        dataloader_config=DataLoaderConfiguration(split_batches=True),  # batch_size per step
    )  # bf16 autocasts through the policy
    train, validation, dev = loaders(run.data, run.source, run.hp, run.spec.seed, run.head)
    optimizer, scheduler = optimizer_and_schedule(run)
    run.model, run.optimizer, train, run.scheduler = run.accelerator.prepare(
        run.model, optimizer, train, scheduler
    )
    run.loaders = (train, validation, dev)


def _resume(run: RunState) -> None:
    """Whether the run checkpoints, and the checkpoint of an earlier process of it, restored
    where its folder holds one (:mod:`peftbench.run.checkpoint`)."""
    run.checkpoint_off = checkpoint.unavailable_reason(run)
    if run.checkpoint_off is None:
        run.resume = checkpoint.restore(run)
    else:
        log.info("no checkpoints: %s", run.checkpoint_off)


def _train_phase(run: RunState) -> None:
    """The ``train`` phase; the losses, the training rates and the resume accounting into the
    record."""
    with phase("train", run.device, run.record):
        trained = train(run)
    # Evaluation holds the trained model only: AdamW's state, the scheduler and the training
    # phase's cached blocks are released before the eval phase resets its peaks.
    run.accelerator.free_memory(run.optimizer, run.scheduler, run.loaders[0])
    run.optimizer = run.scheduler = None
    run.loaders = (None, *run.loaders[1:])
    _account_segments(run, trained)
    warm = {s + i for s in trained.segments.starts for i in range(WARMUP_STEPS_EXCLUDED)}
    kept = [i for i in range(len(trained.step_seconds)) if i not in warm]
    kept = kept or list(range(len(trained.step_seconds)))
    timed = [trained.step_seconds[i] for i in kept]
    timed_samples = [trained.samples[i] for i in kept]
    timed_tokens = [trained.tokens[i] for i in kept]
    losses = trained.losses
    run.record["training"] = {
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "losses": losses,
        "steps": len(losses),
    }
    run.record["throughput"].update(
        {
            "train_samples_per_s": sum(timed_samples) / sum(timed),
            "train_tokens_per_s": sum(timed_tokens) / sum(timed),
            "train_step_median_s": percentile(timed, 0.5),
            "train_step_p90_s": percentile(timed, 0.9),
            "train_steps_timed": len(timed),
        }
    )


def _account_segments(run: RunState, trained: Trained) -> None:
    """A resumed run: the earlier processes' training seconds and peaks added to the train
    phase's; every run: the ``resume`` section (docs/runs.md)."""
    segments, record = trained.segments, run.record
    record["timing"]["train_s"] += segments.train_s
    for key, value in segments.memory.items():
        name = f"train_{key}"
        if record["memory"].get(name) is not None:
            record["memory"][name] = max(record["memory"][name], value)
    resumed = trained.from_step is not None
    record["resume"] = {
        "resumed": resumed,
        "from_step": trained.from_step,
        "segments": len(segments.starts),
        "restart_s": segments.restart_s,
        "lost_s": segments.restart_s if segments.lost_known else None,
        "checkpoints": segments.checkpoints,
        "checkpoint_s": segments.checkpoint_s,
        "checkpoints_off": run.checkpoint_off,
    }


def _evaluate(run: RunState) -> None:
    """The ``eval`` (validation) and ``dev`` phases, and the evaluation rates."""
    _, validation, dev = run.loaders
    with phase("eval", run.device, run.record):
        run.scored = scored = run.head.score(run, run.model, validation)
    seconds = sum(scored.batch_seconds)
    run.record["throughput"].update(
        {
            "eval_samples_per_s": len(scored.references) / seconds,
            "eval_tokens_per_s": scored.tokens / seconds,
            "eval_batch_latency_median_s": percentile(scored.batch_seconds, 0.5),
            "eval_batch_latency_p90_s": percentile(scored.batch_seconds, 0.9),
        }
    )
    with phase("dev", run.device, run.record):  # hyperparameters are selected on this score
        run.dev_scored = run.head.score(run, run.model, dev)


def _measure_trained(run: RunState) -> None:
    """The artifact (when asked for), the head's measurements, and the counts of the trained
    model (which merge it: last)."""
    from peftbench.planning.counting import count_trained

    record = run.record
    if run.save_artifacts and is_main_process():  # the model just evaluated, before merging
        from peftbench.run.artifacts import save_artifact

        record["artifact"] = save_artifact(
            run.out_dir, run.unwrapped(), run.method, run.info, run.spec,
            fingerprint=run.loaded.fingerprint, precision=run.precision,
        )  # fmt: skip
    record["memory"]["expected"] = expected_memory(run.model, run.hp)
    run.head.after_eval(run)  # language-model heads: forgetting, as the model was evaluated
    run.policy.restore(run.model)  # merges and counts on fp32 storage, exactly as at fp32
    run.head.after_restore(run)  # language-model heads: serving cost, unmerged and merged
    with phase("count", run.device, record):  # stored, changed, update rank: the trained model
        record["params"].update(
            count_trained(
                run.unwrapped(), run.method, run.info, run.base, inplace=True,
                mergeable=run.mergeable,
            )
        )  # fmt: skip
    if run.device.startswith("cuda"):
        record["throughput"].update(
            model_flops_utilisation(
                record["throughput"]["train_tokens_per_s"],
                matmul_params(run.model),
                record["params"]["trainable"],
                record["provenance"]["device"]["name"],
                run.precision,
            )
        )


def _write_metrics(run: RunState) -> None:
    """The metrics of both scored splits and the chance level into the record; the head's
    files beside it."""
    from peftbench.plugin.metrics import compute_metrics

    metrics, scored, dev = run.task.metrics, run.scored, run.dev_scored
    chance = run.head.chance(run, scored.references)
    run.record["metrics"] = {
        "primary": run.task.primary_metric,
        "split": "validation",
        "num_examples": len(scored.references),
        "values": compute_metrics(metrics, scored.predictions, scored.references),
        "chance": chance,
        "dev": {
            "num_examples": len(dev.references),
            "values": compute_metrics(metrics, dev.predictions, dev.references),
        },
    }
    positions = eval_positions(len(run.data["validation"]), run.hp["max_eval_examples"])
    run.head.write_outputs(run, positions)


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
