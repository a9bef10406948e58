"""Reusable adapters: a run's trained method and task head, saved in the run's folder in the
format its library loads, and loaded back into a fresh base (``save_artifacts: true``;
docs/runs.md, *Artifacts*).

``<run folder>/artifact/`` holds, for a method with a native format
(:meth:`Method.save_native`; peft's methods: what peft's ``save_pretrained`` writes,
``adapter_model.safetensors`` and ``adapter_config.json``), that, and a task head the method does
not train a copy of beside it in ``head.safetensors``; for peftbench's own methods,
``artifact.safetensors``: :meth:`Method.artifact` and the head.
Both have ``artifact.json`` (method, hyperparameters, model and its fingerprint, the precision
that ran, peftbench's version, the tensor names). On an int8/nf4 base only the method and the
head are saved: loading quantizes the fresh base again, as the run did. Everything loads from
safetensors (no pickle).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftbench import __version__
from peftbench.records.files import staging_dir

if TYPE_CHECKING:
    import torch
    from torch import nn

    from peftbench.planning.spec import RunSpec
    from peftbench.plugin.method import Method
    from peftbench.plugin.model import ModelInfo

ARTIFACT_DIR = "artifact"
"""The artifact's folder inside the run's folder."""
INFO_FILE = "artifact.json"
WEIGHTS_FILE = "artifact.safetensors"
"""peftbench's own methods: the method's tensors and the head."""
HEAD_FILE = "head.safetensors"
"""Methods with a native format: the task head where their own files lack it."""
OWN_FORMAT = "peftbench-safetensors"
"""The format of a method without a native one (:attr:`Method.native_format`)."""


class ArtifactError(ValueError):
    """An artifact folder that cannot be loaded (missing files, unknown format, other base)."""


def save_artifact(
    folder: str | Path,
    model: nn.Module,
    method: Method,
    info: ModelInfo,
    spec: RunSpec,
    *,
    fingerprint: str,
    precision: str,
) -> dict[str, Any]:
    """Write ``folder``/:data:`ARTIFACT_DIR` for the trained ``model`` (what ``method`` returned,
    unmerged), replacing an earlier one atomically; return the record's ``artifact`` entry:
    ``path`` (relative to ``folder``), ``format``, ``files``, ``bytes`` (the weight files' size
    on disk) and ``tensor_bytes`` (their tensors' bytes, the record's ``params.stored_bytes``).
    ``fingerprint`` is the base model's, ``precision`` the one that ran (``auto`` resolved)."""
    from peftbench.plugin.registry import TASKS

    folder = Path(folder)
    task = TASKS.get(spec.task)
    staging = staging_dir(folder, prefix=f".{ARTIFACT_DIR}-")
    try:
        fmt = method.native_format or OWN_FORMAT
        save = _save_native if method.native_format else _save_own
        tensors, head = save(staging, model, method, info)
        described = {
            "format": fmt,
            "peftbench_version": __version__,
            "run_id": spec.run_id,
            "model": spec.model,
            "model_fingerprint": fingerprint,
            "method": spec.method,
            "task": spec.task,
            "head": str(task.head),
            "num_labels": task.num_labels,
            "hparams": spec.hparams,
            "precision": precision,
            "tensors": tensors,
            "head_tensors": head,
        }
        (staging / INFO_FILE).write_text(json.dumps(described, indent=2, sort_keys=True) + "\n")
        final = folder / ARTIFACT_DIR
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    weights = sorted(final.glob("*.safetensors"))
    return {
        "path": ARTIFACT_DIR,
        "format": fmt,
        "files": sorted(path.name for path in final.iterdir()),
        "bytes": sum(path.stat().st_size for path in weights),
        "tensor_bytes": sum(tensor_bytes(path) for path in weights),
    }


def tensor_bytes(path: str | Path) -> int:
    """Bytes of the tensors in a safetensors file: its size less its header (an 8-byte
    little-endian length, then that many bytes of JSON)."""
    with open(path, "rb") as weights:
        header = int.from_bytes(weights.read(8), "little")
    return Path(path).stat().st_size - 8 - header


def _save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``tensors`` to ``path``; tensors sharing storage (tied weights) are cloned, which
    safetensors requires."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    plain = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        plain[name] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    save_file(plain, path)


def _save_own(
    folder: Path, model: nn.Module, method: Method, info: ModelInfo
) -> tuple[list[str], list[str]]:
    from peftbench.planning.counting import head_tensors

    tensors = method.artifact(model, info)
    head = head_tensors(model, method, info)
    _save_safetensors({**tensors, **head}, folder / WEIGHTS_FILE)
    return sorted(tensors), sorted(head)


def _save_native(
    folder: Path, model: nn.Module, method: Method, info: ModelInfo
) -> tuple[list[str], list[str]]:
    from peftbench.planning.counting import head_tensors

    names = method.save_native(model, info, folder)
    if any(method.is_head(name, info) for name in names):  # the method trains a copy of the head
        return names, []
    head = head_tensors(model, method, info)
    if head:
        _save_safetensors(head, folder / HEAD_FILE)
    return names, sorted(head)


def read_info(folder: str | Path) -> tuple[Path, dict[str, Any]]:
    """The artifact folder (``folder`` itself, or a run folder's :data:`ARTIFACT_DIR`) and its
    :data:`INFO_FILE`."""
    folder = Path(folder)
    if not (folder / INFO_FILE).is_file():
        folder = folder / ARTIFACT_DIR
    try:
        described = json.loads((folder / INFO_FILE).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{folder}: no readable {INFO_FILE} ({error})") from error
    from peftbench.plugin.registry import METHODS

    method = METHODS.get(described.get("method", ""))  # an unknown name lists the valid ones
    valid = (OWN_FORMAT, method.native_format) if method.native_format else (OWN_FORMAT,)
    if described.get("format") not in valid:
        raise ArtifactError(
            f"{folder}: format {described.get('format')!r} for {method.name}; "
            f"valid: {', '.join(valid)}"
        )
    return folder, described


def load_artifact(folder: str | Path, device: str = "cpu") -> nn.Module:
    """A fresh base with the artifact in ``folder`` (an artifact folder or its run's folder)
    loaded: the model the run evaluated, unmerged, on ``device``, in eval mode, prepared for
    the precision that ran (quantized again at int8/nf4; at bf16, stored as the run stored
    it: evaluate under :meth:`peftbench.run.precision.Policy.autocast`, as the run did). The base
    must be the one the run trained (its fingerprint), else :class:`ArtifactError`."""
    from peftbench.plugin.quantize import BITS, quantize_linears
    from peftbench.plugin.registry import METHODS, MODELS
    from peftbench.run.precision import Policy
    from peftbench.run.runner import LOAD_DTYPE

    folder, described = read_info(folder)
    method = METHODS.get(described["method"])
    loaded = MODELS.get(described["model"]).load(
        num_labels=described["num_labels"], head=described["head"], dtype=LOAD_DTYPE
    )
    if loaded.fingerprint != described["model_fingerprint"]:
        raise ArtifactError(
            f"{folder}: trained on {described['model']} {described['model_fingerprint']}, "
            f"this base is {loaded.fingerprint}"
        )
    model, info, precision = loaded.model, loaded.info, described["precision"]
    if precision in BITS:
        quantize_linears(model, info, BITS[precision], device)
    policy = Policy(precision, device)
    policy.prepare_base(model)
    if described["format"] == OWN_FORMAT:
        model = _load_own(folder, model, method, info, described)
    else:
        model = _load_native(folder, model, method, info, described)
    policy.prepare_adapted(model)  # on the run's trainable/frozen split, as in the run
    model.requires_grad_(False)
    return model.to(device).eval()


def _load_own(
    folder: Path, model: nn.Module, method: Method, info: ModelInfo, described: dict[str, Any]
) -> nn.Module:
    from safetensors.torch import load_file

    from peftbench.planning.counting import adapt

    model, _ = adapt(model, method, described["hparams"], info)  # as the run: head unfrozen
    tensors = load_file(folder / WEIGHTS_FILE)
    method.load_artifact(model, {name: tensors[name] for name in described["tensors"]}, info)
    _load_head(model, {name: tensors[name] for name in described["head_tensors"]})
    return model


def _load_native(
    folder: Path, model: nn.Module, method: Method, info: ModelInfo, described: dict[str, Any]
) -> nn.Module:
    from safetensors.torch import load_file

    from peftbench.plugin.method import unfreeze_head

    base = {id(p) for p in model.parameters()}
    model = method.load_native(model, info, folder)
    if described["head_tensors"]:
        _load_head(model, load_file(folder / HEAD_FILE))
    for parameter in model.parameters():  # the run's split: the method's new tensors trained
        parameter.requires_grad_(id(parameter) not in base)
    unfreeze_head(model, info, method)
    return model


def _load_head(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    result = model.load_state_dict(tensors, strict=False)
    if result.unexpected_keys:
        raise ArtifactError(f"head tensors the model lacks: {result.unexpected_keys}")
