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

import dataclasses
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from mmanet.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Interface:
    """What an entry of one kind must be, checked when it registers.

    Attributes:
        summary: what the entry is and how it is called (docs/extending.md lists these).
        params: the positional parameters it is called with (a class: its constructor's).
        options: keyword parameters it may accept besides (a fusion's ``num_classes``, ...).
        declarations: what a registration may declare about the entry, with their types
            (a loss term's ``needs_teacher``).
    """

    summary: str
    params: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    declarations: Mapping[str, type] = field(default_factory=dict)
    attributes: tuple[str, ...] = ()  # an entry that is a value: the attributes it has

    def check(self, kind: str, name: str, entry: object) -> None:
        """A one-line ``TypeError`` when ``entry`` cannot be called as this interface says."""
        if self.attributes:
            missing = [a for a in self.attributes if not hasattr(entry, a)]
            if missing:
                raise TypeError(f"{kind} {name!r} must be {self.summary}; it has no {missing[0]}")
            return
        target = getattr(entry, "build", entry) if kind == "dataset" else entry
        if not callable(target):
            raise TypeError(f"{kind} {name!r} must be callable ({self.summary}), got {entry!r}")
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):  # a builtin without a signature: trust it
            return
        parameters = list(signature.parameters.values())
        if any(p.kind is p.VAR_POSITIONAL for p in parameters):
            return
        positional = [
            p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        required = [p.name for p in positional if p.default is p.empty]
        others = [
            p.name
            for p in parameters
            if p.kind is p.KEYWORD_ONLY and p.default is p.empty and p.name not in self.options
        ]
        extra = required[len(self.params) :]
        extra = [n for n in extra if n not in self.options] + others
        if len(positional) < len(self.params) or extra:
            wanted = ", ".join(self.params)
            got = ", ".join(p.name for p in parameters)
            raise TypeError(
                f"{kind} {name!r} must take ({wanted}) ({self.summary}); it takes ({got})"
            )


class Registry(Generic[T]):
    """Named entries of one kind.

    Args:
        kind: what an entry is, for messages ("fusion").
        key: the config key that names an entry ("model.fusion"), for messages.
        builtins: the module whose import registers the built-in entries.
        interface: what an entry must be (checked when it registers).
    """

    def __init__(
        self, kind: str, key: str, builtins: str, interface: Interface | None = None
    ) -> None:
        self.kind, self.key, self.builtins = kind, key, builtins
        self.interface = interface or Interface("any value")
        self._entries: dict[str, T] = {}
        self._declared: dict[str, dict[str, object]] = {}
        self._settings: dict[str, tuple[str, type]] = {}  # name -> (where, settings class)
        self._loaded = False

    def register(
        self,
        name: str,
        entry: T | None = None,
        *,
        settings: type | None = None,
        settings_under: str | None = None,
        **declared: object,
    ) -> Callable[[T], T] | T:
        """``@registry.register("name")`` on a definition, or ``registry.register("name",
        entry)``. Registering another entry under a taken name is an error; registering
        the same entry again (a module imported twice) is not.

        ``settings``: a dataclass of the entry's own settings, which a config holds in
        the entry's section under the entry's name (``method.<name>.<key>``), or under
        ``settings_under`` when the entry reads another entry's settings (SR, MAR's
        ablation, reads ``method.mar``). ``declared``: what the entry declares about
        itself, as its interface allows (``needs_teacher=True`` for a loss term)."""
        allowed = self.interface.declarations
        for key, value in declared.items():
            if key not in allowed:
                known = ", ".join(allowed) or "nothing"
                raise TypeError(f"{self.kind} {name!r}: unknown declaration {key!r} ({known})")
            if not isinstance(value, allowed[key]):
                kind = allowed[key].__name__
                raise TypeError(f"{self.kind} {name!r}: {key} must be {kind}, got {value!r}")

        def add(value: T) -> T:
            if not name or not isinstance(name, str):
                raise ValueError(f"a {self.kind} needs a non-empty name, got {name!r}")
            self.interface.check(self.kind, name, value)
            known = self._entries.get(name)
            if known is not None and not _same(known, value):
                raise ValueError(f"a {self.kind} named {name!r} is already registered")
            self._entries[name] = value
            self._declared[name] = dict(declared)
            if settings is not None:
                if not dataclasses.is_dataclass(settings):
                    raise ValueError(f"{self.kind} {name!r}: settings must be a dataclass")
                self._settings[name] = (settings_under or name, settings)
            return value

        return add if entry is None else add(entry)

    def declared(self, name: str, key: str) -> object:
        """What entry ``name`` declared as ``key`` (the interface's default: False)."""
        self.get(name)
        return self._declared.get(name, {}).get(key, False)

    def settings(self, name: str) -> tuple[str, type] | None:
        """``(the key its settings are held under, their dataclass)`` of entry ``name``
        (None: it declared none)."""
        self.get(name)
        return self._settings.get(name)

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that register a temporary one)."""
        self._entries.pop(name, None)
        self._settings.pop(name, None)
        self._declared.pop(name, None)

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


MODELS: Registry = Registry(
    "model",
    "model.name",
    "mmanet.models",
    Interface(
        "a builder returning a UnifiedNetwork",
        ("cfg", "modalities", "input_shapes", "num_classes", "reg_head"),
    ),
)
FUSIONS: Registry = Registry(
    "fusion",
    "model.fusion",
    "mmanet.fusion",
    Interface(
        "a module class or factory: fusion(features, mask) -> fused, with out_channels",
        ("channels",),
        ("num_classes", "aux", "vectors", "region_supervision"),
    ),
)
DATASETS: Registry = Registry(
    "dataset",
    "data.name",
    "mmanet.data",
    Interface("a function (DataConfig) -> DataBundle, or a class with build / reader", ("cfg",)),
)
TASKS: Registry = Registry(
    "task",
    "task",
    "mmanet.tasks",
    Interface(
        "a Task class declaring its metrics and their directions (register_task checks them)",
        attributes=("metrics", "default_metric", "loss", "evaluate"),
    ),
)
METHODS: Registry = Registry(
    "method",
    "method.name",
    "mmanet.methods",
    Interface("a Method (mmanet.methods)", attributes=("name", "title", "preset")),
)
DISTILLATIONS: Registry = Registry(
    "distillation loss",
    "method.distill",
    "mmanet.losses",
    Interface(
        "loss(student, teacher, teacher_logits, method) -> scalar",
        ("student", "teacher", "teacher_logits", "method"),
    ),
)
REGULARIZERS: Registry = Registry(
    "regularizer",
    "method.regularize",
    "mmanet.losses",
    Interface(
        "factory(num_modalities, method) -> a miner of the weak combinations Ω",
        ("num_modalities", "method"),
    ),
)
LOSS_TERMS: Registry = Registry(
    "loss term",
    "method.terms",
    "mmanet.engine.objective",
    Interface(
        "term(step) -> scalar or None (None: it does not apply to this batch)",
        ("step",),
        declarations={
            # the term reads step.teacher: the run loads method.teacher (required)
            "needs_teacher": bool,
            # the term reads the regularization head: the network is built with one
            "needs_reg_head": bool,
            # omega_from(method) -> the regularizer whose Ω the term reads (step.reg_rows),
            # or None: the run mines Ω with it even without a β term (DMRNet's hard set)
            "omega_from": Callable,
        },
    ),
)

# every registry, by the kind of entry it holds
REGISTRIES: dict[str, Registry] = {
    registry.kind: registry
    for registry in (
        MODELS,
        FUSIONS,
        DATASETS,
        TASKS,
        METHODS,
        DISTILLATIONS,
        REGULARIZERS,
        LOSS_TERMS,
    )
}

__all__ = [
    "DATASETS",
    "DISTILLATIONS",
    "FUSIONS",
    "LOSS_TERMS",
    "METHODS",
    "MODELS",
    "REGISTRIES",
    "REGULARIZERS",
    "TASKS",
    "Interface",
    "Registry",
]
