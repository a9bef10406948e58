"""GGUF checkpoints converted once into a safetensors folder that ``transformers`` loads fast.

``transformers`` reads a GGUF file by dequantizing every tensor (about 20 s for a 135M model);
the converted folder (``model.safetensors``, ``config.json``, the tokenizer files) loads in a
fraction of that. The folder records the source's SHA-256 in :data:`META_FILE`: a folder made
from another file is converted again. Conversion writes a temporary folder and renames it into
place under a lock, so concurrent users wait for one conversion and never see half a folder.

The workflow's rule ``convert`` (``rules/convert.smk``) runs
``python -m peftbench.plugin.convert --gguf FILE --out DIR`` before the jobs that need the folder.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

META_FILE = "peftbench_converted.json"
CACHE_ENV = "PEFTBENCH_CACHE"
"""Environment variable naming peftbench's cache folder (converted models under ``models/``);
the workflow sets it to ``<results_dir>/cache`` unless it is set already."""
DEFAULT_CACHE = "~/.cache/peftbench"


def model_cache() -> Path:
    """Where converted models live: ``$PEFTBENCH_CACHE/models`` (``~/.cache/peftbench/models``
    when the variable is unset)."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser() / "models"


def converted_input(model: str) -> list[str]:
    """The converted folder the model ``model`` loads from, as a list for a rule's ``input:``;
    empty for a model that needs no conversion. A plugin that needs one names its folder in
    its attribute ``converted`` and returns its GGUF file from ``gguf()``."""
    from peftbench.plugin.registry import MODELS

    name = getattr(MODELS.get(model), "converted", None)
    return [str(model_cache() / name)] if name else []


def gguf_source(models: list[str], converted: str) -> str:
    """The GGUF file of the first of ``models`` whose converted folder is named ``converted``."""
    from peftbench.plugin.registry import MODELS

    for model in models:
        source = MODELS.get(model)
        if getattr(source, "converted", None) == converted:
            return str(source.gguf())
    raise ValueError(f"none of the models {models} converts into {converted!r}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def read_meta(folder: Path) -> dict[str, Any] | None:
    """The conversion metadata of ``folder``, or ``None`` when it holds no finished conversion."""
    try:
        return json.loads((folder / META_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def convert_gguf(gguf: Path, out: Path, source_sha256: str | None = None) -> dict[str, Any]:
    """Dequantize ``gguf`` (model and tokenizer) into the safetensors folder ``out``, replacing
    what is there; returns the metadata written to ``out/META_FILE``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf).resolve()
    started = time.perf_counter()
    sha = source_sha256 or sha256_file(gguf)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are plain fp32 tensors by now; only the GGUF marker stops save_pretrained.
    model.hf_quantizer = None
    model.is_quantized = False
    del model.config.quantization_config
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        meta = {
            "source": str(gguf),
            "source_sha256": sha,
            "format": "gguf, dequantized to float32",
            "transformers": _version("transformers"),
            "gguf": _version("gguf"),
            "seconds": round(time.perf_counter() - started, 1),
        }
        (staging / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return meta


def ensure_converted(gguf: Path, out: Path) -> Path:
    """``out``, converted from ``gguf`` unless it already holds a conversion of the same file
    (same SHA-256)."""
    sha = sha256_file(gguf)
    if _is_conversion_of(out, sha):
        return out
    with _locked(out):
        if not _is_conversion_of(out, sha):  # another process may have converted meanwhile
            convert_gguf(gguf, out, sha)
    return out


def _is_conversion_of(folder: Path, sha: str) -> bool:
    meta = read_meta(folder)
    return meta is not None and meta.get("source_sha256") == sha


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m peftbench.plugin.convert",
        description="Convert a GGUF checkpoint into a safetensors folder (once per source).",
    )
    parser.add_argument("--gguf", type=Path, required=True, help="the GGUF file")
    parser.add_argument("--out", type=Path, required=True, help="the folder to write")
    args = parser.parse_args(argv)
    if not args.gguf.is_file():
        parser.error(f"--gguf {args.gguf}: no such file")
    ensure_converted(args.gguf, args.out)
    meta = read_meta(args.out)
    print(f"{args.out}: {meta['source_sha256']} ({meta['seconds']} s to convert)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
