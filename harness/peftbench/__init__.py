"""peftbench: a reproducible benchmarking harness for parameter-efficient fine-tuning."""

from peftbench.plugin.registry import (
    METHODS,
    MODELS,
    TASKS,
    register_method,
    register_model,
    register_task,
)

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "MODELS",
    "TASKS",
    "__version__",
    "register_method",
    "register_model",
    "register_task",
]
