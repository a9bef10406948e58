"""What a peftbench process prints: its own progress, and the libraries' warnings less the
notices a user cannot act on (``--library-warnings`` brings those back)."""

from __future__ import annotations

import logging
import re
import sys
import warnings

NON_ACTIONABLE_LOGS: dict[str, tuple[str, ...]] = {
    "bitsandbytes": ("compiled without GPU support", "kernels-community"),
}
"""Library logger -> message fragments of notices a user cannot act on (a CPU build of
bitsandbytes, an optional faster CPU kernel not installed)."""
DEPRECATION_WARNING_MODULES = ("transformers", "peft")
"""Libraries whose FutureWarning/DeprecationWarning notices concern their own internals."""


class DropNotices(logging.Filter):
    """Drops the log records of :data:`NON_ACTIONABLE_LOGS`."""

    def filter(self, record: logging.LogRecord) -> bool:
        library = record.name.split(".")[0]
        fragments = NON_ACTIONABLE_LOGS.get(library, ())
        return not any(fragment in record.getMessage() for fragment in fragments)


def quiet_library_notices() -> None:
    """Drop the non-actionable notices in a process whose logging belongs to someone else (the
    Snakemake process planning a sweep): each listed library logs through its own handler
    that filters them; its other warnings still reach stderr. Also transformers' info-level
    reports and its and peft's deprecation notices about their own internals."""
    for library in NON_ACTIONABLE_LOGS:
        logger = logging.getLogger(library)
        if not any(isinstance(f, DropNotices) for h in logger.handlers for f in h.filters):
            handler = logging.StreamHandler(sys.stderr)
            handler.addFilter(DropNotices())
            logger.addHandler(handler)
            logger.propagate = False
    from transformers.utils.logging import set_verbosity_error

    set_verbosity_error()  # e.g. the load report of a truncated model with a new head
    for module in DEPRECATION_WARNING_MODULES:
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category, module=rf"{re.escape(module)}\b")


def configure_output(library_warnings: bool) -> None:
    """Log peftbench's progress (logger ``peftbench``, INFO) and library warnings to stderr,
    without the libraries' non-actionable notices unless ``library_warnings``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger("peftbench").setLevel(logging.INFO)
    if not library_warnings:
        handler.addFilter(DropNotices())
        quiet_library_notices()
