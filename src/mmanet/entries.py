"""The registered entries and their settings, as the docs list them (docs/settings.md is
this module's output: ``python -m mmanet.entries > docs/settings.md``; a test keeps the
two equal)."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from mmanet.config import SECTIONS
from mmanet.registry import Registry


def _type(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(hint))
    text = str(hint) if typing.get_origin(hint) else getattr(hint, "__name__", str(hint))
    text = text.replace("typing.", "")
    return "`" + text.replace("|", "\\|") + "`"


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return f"`{f.default!r}`"
    if f.default_factory is not dataclasses.MISSING:
        return f"`{f.default_factory()!r}`"
    return "required"


def settings_markdown() -> str:
    """Per config section, each registered entry with settings: its keys, types and
    defaults; then the entries that declare something (a loss term's ``needs_teacher``)."""
    lines = [
        "# Settings of the registered entries",
        "",
        "Generated from the registries (`python -m mmanet.entries > docs/settings.md`). An",
        "entry's settings live in its section under its name, e.g. `method.mad.temperature=2`;",
        "a run's `config.yaml` records those of every entry it uses. How an entry declares",
        "them: [extending.md](extending.md#settings).",
        "",
    ]
    for section, cls in SECTIONS.items():
        registries: tuple[Registry, ...] = cls.REGISTRIES
        for registry in registries:
            for name in registry.names():
                declared = registry.settings(name)
                if declared is None or declared[0] != name:
                    continue
                settings = declared[1]
                if not settings.__module__.startswith("mmanet."):
                    continue  # a user's entry (imported in this process): not the library's
                hints = typing.get_type_hints(settings)
                lines += [f"## `{section}.{name}` ({registry.kind})", ""]
                doc = (settings.__doc__ or "").strip().splitlines()
                if doc:
                    lines += [" ".join(line.strip() for line in doc), ""]
                readers = [
                    other
                    for other in registry.names()
                    if other != name and (registry.settings(other) or ("",))[0] == name
                ]
                if readers:
                    lines += [f"Also read by: {', '.join(f'`{r}`' for r in readers)}.", ""]
                lines += ["| key | type | default |", "|---|---|---|"]
                for f in dataclasses.fields(settings):
                    key = f"`{section}.{name}.{f.name}`"
                    lines.append(f"| {key} | {_type(hints[f.name])} | {_default(f)} |")
                lines.append("")
    lines += ["## Declarations", "", "| kind | entry | declares |", "|---|---|---|"]
    for cls in SECTIONS.values():
        for registry in cls.REGISTRIES:
            for key in registry.interface.declarations:
                for name in registry.names():
                    entry = registry.get(name)
                    if not getattr(entry, "__module__", "").startswith("mmanet."):
                        continue
                    value = registry.declared(name, key)
                    if value:
                        shown = getattr(value, "__name__", repr(value))
                        lines.append(f"| {registry.kind} | `{name}` | `{key}={shown}` |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(settings_markdown(), end="")
