"""One registry mechanism for every extension point: models, fusions, datasets, tasks,
methods, distillation losses, regularizers and loss terms.

A registry maps a name to an entry (a builder, a class, a function). Entries register
themselves with a decorator in the file that defines them::

    from mmanet.fusion import register_fusion

    @register_fusion("gated")
    class GatedFusion(nn.Module): ...

Configuration validation, the CLI's choices and the docs read the registries; there is
no other list of names. The built-in entries of a registry are registered when its
package (``builtins``) is first imported, which a lookup does on demand, so this module
and ``mmanet.config`` import neither torch nor the packages themselves.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from mmanet.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind.

    Args:
        kind: what an entry is, for messages ("fusion").
        key: the config key that names an entry ("model.fusion"), for messages.
        builtins: the module whose import registers the built-in entries.
    """

    def __init__(self, kind: str, key: str, builtins: str) -> None:
        self.kind, self.key, self.builtins = kind, key, builtins
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str, entry: T | None = None) -> Callable[[T], T] | T:
        """``@registry.register("name")`` on a definition, or ``registry.register("name",
        entry)``. Registering another entry under a taken name is an error; registering
        the same entry again (a module imported twice) is not."""

        def add(value: T) -> T:
            if not name or not isinstance(name, str):
                raise ValueError(f"a {self.kind} needs a non-empty name, got {name!r}")
            known = self._entries.get(name)
            if known is not None and not _same(known, value):
                raise ValueError(f"a {self.kind} named {name!r} is already registered")
            self._entries[name] = value
            return value

        return add if entry is None else add(entry)

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that register a temporary one)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The entry ``name``; an unknown name is a one-line :class:`ConfigError` listing the
        registered ones."""
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.key}={name!r}; registered: {', '.join(self.names())}"
            ) from None

    def check(self, name: str) -> str:
        """``name`` when it is registered (else the error of :meth:`get`)."""
        self.get(name)
        return name

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        self._load()
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} registered)"

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True  # before the import: the package registers into this one
            importlib.import_module(self.builtins)


def _same(a: object, b: object) -> bool:
    """Whether two entries are one definition: the same object, or the same qualified name
    defined in the same file (a module imported twice, or under two names: by path
    through ``imports`` and by name from the user's own code)."""
    if a is b or a == b:
        return True
    return _origin(a) is not None and _origin(a) == _origin(b)


def _origin(entry: object) -> tuple[str, str] | None:
    """``(the resolved file that defines entry, its qualified name)``, if both are known."""
    qualname = getattr(entry, "__qualname__", None)
    module = sys.modules.get(getattr(entry, "__module__", None) or "")
    file = getattr(module, "__file__", None)
    if qualname is None or file is None:
        return None
    return os.path.realpath(file), qualname


MODELS: Registry = Registry("model", "model.name", "mmanet.models")
FUSIONS: Registry = Registry("fusion", "model.fusion", "mmanet.fusion")
DATASETS: Registry = Registry("dataset", "data.name", "mmanet.data")
TASKS: Registry = Registry("task", "task", "mmanet.tasks")
METHODS: Registry = Registry("method", "method.name", "mmanet.methods")
DISTILLATIONS: Registry = Registry("distillation loss", "method.distill", "mmanet.losses")
REGULARIZERS: Registry = Registry("regularizer", "method.regularize", "mmanet.losses")
LOSS_TERMS: Registry = Registry("loss term", "method.terms", "mmanet.engine.objective")

__all__ = [
    "DATASETS",
    "DISTILLATIONS",
    "FUSIONS",
    "LOSS_TERMS",
    "METHODS",
    "MODELS",
    "REGULARIZERS",
    "TASKS",
    "Registry",
]
