"""Optional backends: packages a run needs only for some values of its spec (bitsandbytes for
quantized bases). They are imported where used, through :func:`require`, so a missing one is a
fact about one combination (an ``unsupported`` record naming the install command), never an
import error of the harness."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingBackendError(ImportError):
    """An optional package that this run needs is not installed; the message says how to
    install it."""


def require(module: str, purpose: str, install: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingBackendError` naming ``purpose`` and the
    ``install`` command."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingBackendError(
            f"{purpose} needs the {module} package, which cannot be imported ({error}); "
            f"install it: {install}"
        ) from error
