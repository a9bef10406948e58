"""peft's ``method_comparison`` experiment folders as sweep settings (docs/parameters.md, "peft's
published counts"; the folder format: huggingface/peft ``method_comparison/MetaMathQA``).

A folder holds ``adapter_config.json`` (a peft config: ``peft_type`` and the config's fields)
and optionally ``training_params.json`` (what the experiment changes in peft's
``default_training_params.json``). It becomes one setting, labelled by the folder's name, of
the method ``peft:<peft_type in lower case>``, whose hyperparameters are the peft config's
fields; a folder without ``adapter_config.json`` is peft's full fine-tuning, peftbench's
:data:`FULL_FINETUNING`. Every key is mapped, ignored by a listed reason, or refused naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench.planning.grid import check_label
from peftbench.plugin.errors import SpecError
from peftbench.plugin.registry import METHODS, UnknownNameError

ADAPTER_CONFIG = "adapter_config.json"
TRAINING_PARAMS = "training_params.json"
METHOD_PREFIX = "peft:"
FULL_FINETUNING = "full"
"""The method of a folder without ``adapter_config.json`` (peft's runner then trains every
parameter)."""
IGNORED_ADAPTER_KEYS = {
    "peft_type": "names the method (peft:<type>)",
    "base_model_name_or_path": "the sweep's models decide the model",
    "revision": "the model's hub revision: the model plugin decides it",
    "peft_version": "the peft that wrote the file, not a setting",
    "auto_mapping": "peft's bookkeeping for custom models",
    "inference_mode": "peft sets it when it saves an adapter; training always trains",
    "task_type": "the task's head decides it (a causal LM for generation tasks)",
    "megatron_core": "Megatron-LM's module, for its parallel layers, which peftbench does not load",
    "total_step": "AdaLoRA's schedule length: peftbench sets it to the run's steps",
    **dict.fromkeys(
        ("token_dim", "num_layers", "num_attention_heads", "num_transformer_submodules"),
        "peft reads it from the model's config (the folders hold Llama-3.2-3B's)",
    ),
}
"""``adapter_config.json`` keys that are bookkeeping, not hyperparameters, and why."""
EMPTY_VALUES = (None, False, [], {}, "")
"""A key the method lacks is dropped when it holds one of these: an older peft wrote fields
its successors removed at such values (``fan_in_fan_out``, ``exclude_modules`` of C3A;
``rank_pattern``, ``alpha_pattern`` of OFT), which configure nothing. Any other value of an
unknown key is refused."""
TRAINING_KEYS = {
    "max_steps": "steps",
    "batch_size": "batch_size",
    "batch_size_eval": "eval_batch_size",
    "max_seq_length": "max_length",
    "grad_norm_clip": "max_grad_norm",
    "lr_scheduler": "lr_scheduler",
}
"""``training_params.json`` keys and the peftbench hyperparameter each one sets."""
OPTIMIZER_KEYS = {"lr": "lr", "weight_decay": "weight_decay"}
"""``optimizer_kwargs`` keys and the peftbench hyperparameter each one sets."""
ADAMW_WEIGHT_DECAY = 0.01
"""``torch.optim.AdamW``'s default: peft merges ``training_params.json`` over its defaults
shallowly, so ``optimizer_kwargs`` without ``weight_decay`` replaces the default's 0.1 and
AdamW's own default applies."""
IGNORED_TRAINING_KEYS = {
    "model_id": "the sweep's models decide the model",
    "eval_steps": "how often peft logs a validation score; the training data, the steps and "
    "the scored test split do not depend on it",
}
"""``training_params.json`` keys that set nothing peftbench varies, and why."""
OPTIMIZER = "AdamW"
"""peftbench's optimizer: the only ``optimizer_type`` a folder may name."""


@dataclass(frozen=True)
class Experiment:
    """One experiment folder, read: the method, the setting's label and its overrides."""

    folder: Path
    method: str
    label: str
    hparams: dict[str, Any] = field(default_factory=dict)


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"{path}: cannot be read ({error})") from None
    except json.JSONDecodeError as error:
        raise SpecError(f"{path} line {error.lineno}: not JSON ({error.msg})") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a JSON {type(data).__name__}, expected an object")
    return data


def adapter_hparams(path: Path) -> tuple[str, dict[str, Any]]:
    """The method and hyperparameters an ``adapter_config.json`` gives."""
    config = read_json(path)
    peft_type = config.get("peft_type")
    if not isinstance(peft_type, str):
        raise SpecError(f"{path}: peft_type={peft_type!r}; expected a peft.PeftType name")
    method = METHOD_PREFIX + peft_type.lower()
    try:
        own = METHODS.get(method).defaults
    except UnknownNameError as error:
        raise SpecError(f"{path}: peft_type={peft_type!r}: {error}") from None
    hparams = {}
    for key, value in config.items():
        if key in IGNORED_ADAPTER_KEYS or (key not in own and value in EMPTY_VALUES):
            continue
        if key not in own:
            raise SpecError(
                f"{path}: key {key!r} (= {value!r}) is not a hyperparameter of {method}; "
                f"valid: {', '.join(sorted(own))}"
            )
        hparams[key] = target_modules(value) if key == "target_modules" else value
    return method, hparams


def target_modules(value: Any) -> Any:
    """A folder's ``target_modules`` as the ``peft:`` methods take it: ``auto`` for null
    (peft's default for the model type), comma-separated names for a list."""
    if value is None:
        return "auto"
    if isinstance(value, list) and all(isinstance(name, str) for name in value):
        return ",".join(value)
    return value


def training_hparams(path: Path) -> dict[str, Any]:
    """The peftbench hyperparameters a ``training_params.json`` sets (:data:`TRAINING_KEYS`,
    :data:`OPTIMIZER_KEYS`, :data:`ADAMW_WEIGHT_DECAY`); an unknown key is refused."""
    hparams: dict[str, Any] = {}
    for key, value in read_json(path).items():
        if key in TRAINING_KEYS:
            no_schedule = key == "lr_scheduler" and value is None  # peft: a constant lr
            hparams[TRAINING_KEYS[key]] = "constant" if no_schedule else value
        elif key == "optimizer_type":
            if value != OPTIMIZER:
                raise SpecError(f"{path}: optimizer_type={value!r}; valid: {OPTIMIZER!r}")
        elif key == "optimizer_kwargs":
            if not isinstance(value, dict):
                raise SpecError(f"{path}: optimizer_kwargs={value!r}: expected an object")
            unknown = sorted(set(value) - set(OPTIMIZER_KEYS))
            if unknown:
                raise SpecError(
                    f"{path}: optimizer_kwargs key {unknown[0]!r} has no peftbench equivalent; "
                    f"valid: {', '.join(OPTIMIZER_KEYS)}"
                )
            hparams["weight_decay"] = ADAMW_WEIGHT_DECAY  # peft's shallow merge
            hparams.update({OPTIMIZER_KEYS[k]: v for k, v in value.items()})
        elif key not in IGNORED_TRAINING_KEYS:
            valid = [*TRAINING_KEYS, "optimizer_type", "optimizer_kwargs", *IGNORED_TRAINING_KEYS]
            raise SpecError(
                f"{path}: key {key!r} has no peftbench equivalent; valid: {', '.join(valid)}"
            )
    return hparams


def read_experiment(folder: str | Path, training: bool = True) -> Experiment:
    """The setting an experiment folder describes (``training`` False: its
    ``adapter_config.json`` only, all a parameter count needs); :class:`SpecError` naming the
    folder, the file and the key that cannot be mapped."""
    path = Path(folder)
    if not path.is_dir():
        raise SpecError(f"peft experiment {str(folder)!r} is not a folder")
    adapter, params = path / ADAPTER_CONFIG, path / TRAINING_PARAMS
    if not adapter.is_file() and not params.is_file():
        raise SpecError(
            f"peft experiment {str(folder)!r} holds neither {ADAPTER_CONFIG} nor {TRAINING_PARAMS}"
        )
    method, hparams = adapter_hparams(adapter) if adapter.is_file() else (FULL_FINETUNING, {})
    if training and params.is_file():
        hparams.update(training_hparams(params))
    try:
        label = check_label(path.resolve().name)
    except ValueError as error:
        raise SpecError(f"peft experiment {str(folder)!r}: {error}") from None
    return Experiment(path, method, label, hparams)


def experiment_settings(
    folders: list[str],
) -> tuple[dict[str, dict[str, dict[str, Any]]], list[str]]:
    """``{method: {label: overrides}}`` of ``folders`` (a sweep's ``peft_experiments``), and the
    problems found (every bad folder, and labels two folders of one method share)."""
    settings: dict[str, dict[str, dict[str, Any]]] = {}
    problems = []
    for folder in folders:
        try:
            found = read_experiment(folder)
        except SpecError as error:
            problems.append(f"peft_experiments: {error}")
            continue
        same = settings.setdefault(found.method, {})
        if found.label in same:
            problems.append(
                f"peft_experiments: {folder!r}: a second {found.method} folder named "
                f"{found.label!r} (settings are named by their folder's name)"
            )
        same[found.label] = found.hparams
    return settings, problems
