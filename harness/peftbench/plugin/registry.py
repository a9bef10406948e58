"""Plugin registries for methods, tasks and models.

A plugin registers with a decorator (``@register_method("lora")``) in its module; installed
packages expose such modules through the entry-point groups ``peftbench.methods``,
``peftbench.tasks`` and ``peftbench.models``. peftbench's own plugins are registered through
those same entry points, so a third-party plugin is indistinguishable from a built-in one. A
module may also register a *provider*: many names, listed cheaply and each built on first use
(one method per tuner of the installed peft).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that no plugin registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0])


class Registry(Generic[T]):
    """Name -> plugin mapping, filled by decorators and entry points (loaded lazily, once)."""

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._items: dict[str, T] = {}
        self._resolvers: list[Callable[[str], T | None]] = []
        self._providers: list[tuple[Callable[[], Iterable[str]], Callable[[str], T]]] = []
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register ``obj`` (a class is instantiated without arguments) as ``name``."""

        def decorate(obj: Any) -> Any:
            instance = obj() if isinstance(obj, type) else obj
            if name in self._items and type(self._items[name]) is not type(instance):
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            instance.name = name
            self._items[name] = instance
            return obj

        return decorate

    def add_provider(self, names: Callable[[], Iterable[str]], make: Callable[[str], T]) -> None:
        """Register every name ``names()`` lists (it should be cheap: listings and error
        messages call it), each built by ``make(name)`` when first asked for."""
        self._providers.append((names, make))

    def add_resolver(self, resolver: Callable[[str], T | None]) -> None:
        """Register a function resolving names no decorator registered (e.g. ``hf:<hub id>``)."""
        self._resolvers.append(resolver)

    def load_plugins(self) -> None:
        """Import every module declared under this registry's entry-point group."""
        if self._loaded:
            return
        self._loaded = True
        for ep in entry_points(group=self.group):
            module = ep.value.split(":")[0]
            importlib.import_module(module)

    def get(self, name: str) -> T:
        """The plugin called ``name``; fails with the list of valid names otherwise."""
        self.load_plugins()
        if name in self._items:
            return self._items[name]
        for names, make in self._providers:
            if name in names():
                self.register(name)(make(name))
                return self._items[name]
        for resolve in self._resolvers:
            found = resolve(name)
            if found is not None:
                return found
        valid = self.names()
        close = difflib.get_close_matches(name, valid, n=3)
        guess = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise UnknownNameError(
            f"unknown {self.kind} {name!r}; {guess}valid {self.kind}s: {', '.join(valid)}"
        )

    def check(self, name: str) -> None:
        """Raise :class:`UnknownNameError` unless ``name`` resolves."""
        self.get(name)

    def names(self) -> list[str]:
        """Every registered name, the providers' included, sorted."""
        self.load_plugins()
        return sorted({*self._items, *(n for names, _ in self._providers for n in names())})

    def __iter__(self) -> Iterator[tuple[str, T]]:
        return iter([(name, self.get(name)) for name in self.names()])

    def __contains__(self, name: object) -> bool:
        try:
            self.get(str(name))
        except UnknownNameError:
            return False
        return True


# Upper case: ``peftbench.methods`` etc. are the packages holding peftbench's own plugins.
METHODS: Registry[Any] = Registry("method", "peftbench.methods")
TASKS: Registry[Any] = Registry("task", "peftbench.tasks")
MODELS: Registry[Any] = Registry("model", "peftbench.models")

register_method = METHODS.register
register_task = TASKS.register
register_model = MODELS.register
