"""Your own code for a run: the modules named by the config key ``imports``.

Each entry is a module name (``my_package.encoders``, importable from the current
directory or the Python path) or the path of a ``.py`` file (relative to the current
directory). Importing them runs their ``register_*`` decorators, so a run whose model,
fusion, dataset, task, method or loss term comes from your code can be trained,
evaluated, exported, predicted and compared by every command: the list is recorded in
the run's ``config.yaml`` and in each checkpoint (:func:`recorded_imports`: a file as its
absolute path, so the run is evaluated from any folder), and every command imports it
first.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from mmanet.errors import ConfigError

_imported: dict[str, ModuleType] = {}


def import_user_modules(entries: Iterable[str]) -> list[ModuleType]:
    """Import every entry once per process (a second call is free); returns the modules."""
    return [_import(str(entry)) for entry in entries]


def is_file_entry(entry: str) -> bool:
    """Whether an entry of ``imports`` names a ``.py`` file (else a module name)."""
    return str(entry).endswith(".py")


def recorded_imports(entries: Iterable[str]) -> list[str]:
    """``imports`` as a run records them: each file as its absolute path (a relative one is
    relative to the current directory, as when it is imported), each module name as it is."""
    return [str(Path(entry).resolve()) if is_file_entry(entry) else str(entry) for entry in entries]


def _import(entry: str) -> ModuleType:
    # a file is known by its resolved path: the same relative entry from another folder is
    # another file
    key = str(Path(entry).resolve()) if is_file_entry(entry) else entry
    if key in _imported:
        return _imported[key]
    module = _import_file(Path(entry)) if is_file_entry(entry) else _import_name(entry)
    _imported[key] = module
    return module


def _import_file(path: Path) -> ModuleType:
    resolved = path.resolve()
    if not resolved.is_file():
        raise ConfigError(f"imports: file not found: {path}")
    known = _loaded_from(resolved)  # e.g. imported by the user's own code as a module
    if known is not None:
        return known
    name = f"mmanet_user_{resolved.stem}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pickled objects of the module find it by this name
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise ConfigError(f"imports: {path} failed: {type(err).__name__}: {err}") from err
    return module


def _import_name(name: str) -> ModuleType:
    here = os.getcwd()
    added = here not in sys.path
    if added:  # a console script's path does not hold the current directory
        sys.path.insert(0, here)
    try:
        if name not in sys.modules:  # the same file imported by path before: the same module
            spec = importlib.util.find_spec(name)
            known = _loaded_from(Path(spec.origin)) if spec and spec.origin else None
            if known is not None:
                sys.modules[name] = known
                return known
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and name.startswith(err.name):
            raise ConfigError(
                f"imports: no module named {name!r} (a module in {here} or on the Python "
                "path, or a .py file)"
            ) from None
        raise ConfigError(f"imports: {name} failed: {type(err).__name__}: {err}") from err
    except Exception as err:
        raise ConfigError(f"imports: {name} failed: {type(err).__name__}: {err}") from err
    finally:
        if added:
            sys.path.remove(here)


def _loaded_from(file: Path) -> ModuleType | None:
    """The module already imported from ``file`` (under any name), if there is one."""
    resolved = file.resolve()
    for module in list(sys.modules.values()):
        origin = getattr(module, "__file__", None)
        if origin and origin.endswith(resolved.name) and Path(origin).resolve() == resolved:
            return module
    return None


__all__ = ["import_user_modules", "is_file_entry", "recorded_imports"]
