"""The search space of a study: config keys with a range or choices, a method's default
space, and the YAML form a user writes (``--space``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mmanet.config import Config, deep_merge, to_dict
from mmanet.errors import ConfigError

_RANGE_FIELDS = {"low", "high", "log", "step", "choices"}


@dataclass(frozen=True)
class Param:
    """One dimension of the search space: a config key and its range or choices."""

    key: str
    kind: str  # "float", "int" or "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """The value Optuna's ``trial`` draws for this key."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            step = int(self.step or 1)
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=step, log=self.log
            )
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def record(self) -> dict[str, Any]:
        """The YAML form of this dimension (``space.yaml``, the study's record)."""
        if self.kind == "categorical":
            return {"choices": list(self.choices)}
        spec: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            spec["log"] = True
        if self.step is not None:
            spec["step"] = self.step
        return spec

    def bounds(self) -> list[Any]:
        """The values whose configs must validate: the ends of the range, or every choice."""
        return list(self.choices) if self.kind == "categorical" else [self.low, self.high]


# -- the search space ---------------------------------------------------------------------


def default_space(config: Config) -> dict[str, Param]:
    """The default space of ``config``'s method, from its switches: α (distilling) log-uniform
    over the config's α × [1/10, 10]; β (regularizing) log-uniform over [0.05, 2] and MAR's
    warm-up in [1, min(10, epochs - 1)]; the learning rate log-uniform over the config's
    × [1/10, 10]; the weight decay log-uniform over [1e-6, 1e-2]."""
    method, optim = config.method, config.optim
    space: dict[str, Param] = {}
    if method.distill != "none":
        if method.alpha <= 0:
            raise ConfigError(
                f"method.alpha={method.alpha}: the default space centres α on the config's "
                "value; set method.alpha > 0 or give --space"
            )
        alpha = method.alpha
        space["method.alpha"] = Param("method.alpha", "float", alpha / 10, alpha * 10, log=True)
    if method.regularize != "none":
        space["method.beta"] = Param("method.beta", "float", 0.05, 2.0, log=True)
    if method.regularize == "mar" or (method.distill != "none" and method.begin == "after_warmup"):
        high = min(10, optim.epochs - 1)
        if high > 1:
            key = "method.mar.warmup_epochs"
            space[key] = Param(key, "int", 1, high)
    lr = optim.lr
    space["optim.lr"] = Param("optim.lr", "float", lr / 10, lr * 10, log=True)
    space["optim.weight_decay"] = Param("optim.weight_decay", "float", 1e-6, 1e-2, log=True)
    return space


def _lookup(config: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    """Whether the dotted ``key`` is in ``config`` (a nested dict) and its value."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    return value


def parse_space(raw: Any, config: Config, source: str) -> dict[str, Param]:
    """A search space from its YAML form: ``key: {low, high[, log][, step]}`` (an int key
    of the config is searched over integers) or ``key: {choices: [...]}``."""
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{source}: expected a mapping of config keys to ranges or choices")
    current = to_dict(config)
    space: dict[str, Param] = {}
    for key, spec in raw.items():
        where = f"{source}: {key}"
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{where}: expected {{low, high[, log][, step]}} or {{choices}}")
        unknown = sorted(set(spec) - _RANGE_FIELDS)
        if unknown:
            raise ConfigError(
                f"{where}: unknown field {unknown[0]!r} (use low, high, log, step or choices)"
            )
        if "choices" in spec:
            if set(spec) != {"choices"}:
                raise ConfigError(f"{where}: give choices alone, or low and high")
            choices = spec["choices"]
            if not isinstance(choices, list) or not choices:
                raise ConfigError(f"{where}: choices must be a non-empty list")
            if any(c is not None and not isinstance(c, (bool, int, float, str)) for c in choices):
                raise ConfigError(f"{where}: choices must be numbers, strings or booleans")
            space[key] = Param(key, "categorical", choices=tuple(choices))
            continue
        if "low" not in spec or "high" not in spec:
            raise ConfigError(f"{where}: give low and high (or choices)")
        low, high = _number(spec["low"], f"{where}.low"), _number(spec["high"], f"{where}.high")
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise ConfigError(f"{where}.log must be true or false, got {log!r}")
        step = spec.get("step")
        if step is not None and _number(step, f"{where}.step") <= 0:
            raise ConfigError(f"{where}.step must be > 0, got {step}")
        if low >= high:
            raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
        if log and low <= 0:
            raise ConfigError(f"{where}: a log range needs low > 0, got {low}")
        if log and step is not None:
            raise ConfigError(f"{where}: give log or step, not both")
        found, value = _lookup(current, key)
        integer = isinstance(value, int) and not isinstance(value, bool)
        if not found and isinstance(low, int) and isinstance(high, int):
            integer = step is None or isinstance(step, int)
        if integer and not all(isinstance(v, int) for v in (low, high, step or 1)):
            raise ConfigError(f"{where}: {key} is an integer; low, high and step must be too")
        kind = "int" if integer else "float"
        bounds = (float(low), float(high)) if kind == "float" else (low, high)
        space[key] = Param(key, kind, *bounds, log=log, step=step)
    return space


def load_space(path: str | Path, config: Config) -> dict[str, Param]:
    """The search space of a YAML file (see :func:`parse_space`)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"space file not found: {path}") from None
    except yaml.YAMLError:
        raise ConfigError(f"space file {path} is not valid YAML") from None
    return parse_space(raw, config, f"space file {path}")


def nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"optim.lr": 0.1}`` -> ``{"optim": {"lr": 0.1}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node: Any = value
        for part in reversed(key.split(".")):
            node = {part: node}
        out = deep_merge(out, node)
    return out
