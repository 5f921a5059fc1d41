"""Hyperparameter search on the validation split (``mmanet tune``), built on Optuna.

Every trial trains one method with the parameters Optuna's TPE sampler draws from a
search space, validates every epoch and reports the selection value (the Validation
object's: the average over the combinations for a unified network) to a pruner, which
may end it early; its objective is its best validation value. The test split is never
evaluated. The teacher of a distilling method is trained once (``DIR/teacher``) and
shared by every trial. The study lives in a SQLite file in ``DIR`` (or an RDB URL shared
by many workers) under a name fixed by ``DIR``, so the same command resumes it.

Outputs in ``DIR``: ``best.yaml`` (the best trial's full config: ``mmanet train --config
DIR/best.yaml`` reproduces its run), ``trials.csv``, ``search.png``, ``space.yaml`` and
``trials/NNNN/`` (each trial's run).
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mmanet.config import Config, build_config, deep_merge, differences, parse_overrides, to_dict
from mmanet.errors import ConfigError, TrainingError, TrainingInterrupted
from mmanet.io import atomic_write, atomic_write_text
from mmanet.report import LOWER_IS_BETTER

STUDY_RECORD = "mmanet"  # the study's user attribute recording what it tunes
PRUNERS = ("median", "halving", "none")
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


# -- the study ----------------------------------------------------------------------------


@dataclass
class Study:
    """What one tuning study trains: the config file and overrides every trial starts
    from (its teacher, ``validation.every=1``), the space, and where it writes."""

    config_path: str | Path | None
    layer: dict[str, Any]  # the command's overrides, method, teacher, validation.every=1
    space: dict[str, Param]
    out: Path

    def config(self, params: Mapping[str, Any], run_dir: Path) -> Config:
        """The config of a trial with ``params``, training into ``run_dir``."""
        layer = deep_merge(deep_merge(self.layer, nested(params)), {"out": str(run_dir)})
        return build_config(self.config_path, layer)

    def check(self, source: str) -> None:
        """Every end of every range (every choice) gives a valid config: a bad space is
        one line naming ``source`` and the key before anything trains."""
        for param in self.space.values():
            for value in param.bounds():
                try:
                    self.config({param.key: value}, self.out / "check")
                except ConfigError as err:
                    raise ConfigError(f"{source}: {param.key}={value!r}: {err}") from None


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / 'study.db').resolve()}"


def study_name(out: Path) -> str:
    """Fixed by the output folder, so that a rerun (or another worker) joins the study."""
    return f"mmanet-tune-{out.resolve().name}"


def make_pruner(name: str, epochs: int) -> Any:
    """``median``: stop a trial whose value is worse than the median of the earlier trials
    at the same epoch, after 5 complete trials and a third of the epochs; ``halving``:
    asynchronous successive halving (rungs from max(1, epochs // 8) epochs, factor 3);
    ``none``: never."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=epochs // 3)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=max(1, epochs // 8), reduction_factor=3
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner {name!r}: use {', '.join(PRUNERS)}")


@contextlib.contextmanager
def folder_lock(path: Path, wait: bool = False) -> Iterator[None]:
    """Hold the lock file ``path``. ``DIR/.tune.lock`` (not waiting): one process at a time
    tunes with the folder's SQLite file, so a trial that is RUNNING there when the lock is
    taken was left by a killed process. ``DIR/.teacher.lock`` (waiting): one worker trains
    the shared teacher while the others wait for it."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise ConfigError(
                f"{path.parent} is being tuned by another process; wait for it, or run "
                "several workers with an RDB --storage URL"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def requeue_stale(study: Any, storage: Any) -> list[int]:
    """Mark the trials left RUNNING by a killed process FAIL and queue their parameters
    again (a new trial each, recording ``retry_of``); returns their numbers."""
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(study.study_name)
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})
    return [trial.number for trial in stale]


def check_record(study: Any, record: dict[str, Any], out: Path) -> None:
    """A study holds one tuning problem: the config and space of a rerun must be the
    same as the first run's (runtime keys such as ``threads`` aside)."""
    from mmanet.engine.rundir import RUNTIME_KEYS

    saved = study.user_attrs.get(STUDY_RECORD)
    if saved is None:
        study.set_user_attr(STUDY_RECORD, record)
        return
    changed = [
        f"{key}: {a!r} -> {b!r}"
        for key, a, b in differences(saved, record)
        if key.removeprefix("config.") not in RUNTIME_KEYS
    ]
    if changed:
        raise ConfigError(
            f"{out} holds a study with another config or space ({'; '.join(changed)}); "
            "choose another --out or remove it"
        )


class TuneInterrupted(TrainingInterrupted):
    """SIGINT / SIGTERM during a trial: the trial's parameters are queued again, and the
    same command continues the study."""

    def __init__(self, signum: int, out: Path) -> None:
        Exception.__init__(
            self, f"tuning interrupted; run the same command to continue the study in {out}"
        )
        self.signum, self.checkpoint = signum, None


# -- running ------------------------------------------------------------------------------


def train_teacher(study: Study, data: Any, teacher_dir: Path) -> None:
    """Train the shared teacher into ``teacher_dir`` (no test split), or reuse / resume
    the one there; a teacher of another config is an error."""
    from mmanet.engine import Trainer
    from mmanet.engine.checkpoint import latest_checkpoint, read_run_record
    from mmanet.engine.rundir import refuse_another_config

    layer = deep_merge(study.layer, {"method": {"name": "teacher", "teacher": None}})
    layer["out"] = str(teacher_dir)
    config = build_config(study.config_path, layer)
    refuse_another_config(teacher_dir, config, "a teacher")
    record = read_run_record(teacher_dir) or {}
    if record.get("epochs", 0) >= config.optim.epochs or record.get("stopped_early"):
        return
    print(f"training the teacher into {teacher_dir} (shared by every trial)", flush=True)
    resume = latest_checkpoint(teacher_dir) is not None
    trainer = Trainer(config, data)
    with _quiet(teacher_dir / "stdout.log"):
        trainer.fit(resume=resume, overwrite=not resume, test=False)


@contextlib.contextmanager
def _quiet(log: Path) -> Iterator[None]:
    """A run's printed lines go to ``log`` (the tuning prints one line per trial)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle, contextlib.redirect_stdout(handle):
        yield


def tune(
    config_path: str | Path | None,
    overrides: Sequence[str] | Mapping[str, Any],
    out: str | Path,
    trials: int = 20,
    method: str = "mmanet",
    space: str | Path | None = None,
    storage: str | None = None,
    seed: int = 0,
    timeout: float | None = None,
    pruner: str | Any = "median",
) -> dict[str, Any]:
    """Search ``trials`` finished (complete or pruned) trials of ``method`` on the val split
    and write ``best.yaml``, ``trials.csv`` and ``search.png`` in ``out``; rerunning the
    same call continues the study. ``seed`` seeds the sampler (every trial trains with the
    config's ``seed``); ``pruner``: a name of :data:`PRUNERS` or an Optuna pruner.
    Returns ``{"best": {...} | None, "trials": [...], "direction", "metric"}``."""
    import optuna

    from mmanet.data import build_data
    from mmanet.engine.selection import Validation
    from mmanet.methods import get_method
    from mmanet.tasks import build_task

    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    out = Path(out)
    given = overrides if isinstance(overrides, Mapping) else parse_overrides(overrides)
    layer = deep_merge(dict(given), {"method": {"name": method}, "validation": {"every": 1}})
    base = build_config(config_path, layer)
    if get_method(method).per_combination and base.method.combination is None:
        raise ConfigError(
            f"tune: {method} trains one model per combination; name one with method.combination="
        )
    teacher_dir = None
    if base.method.distill != "none" and base.method.teacher is None:
        teacher_dir = out / "teacher"
        layer = deep_merge(layer, {"method": {"teacher": str(teacher_dir)}})
    problem = Study(config_path, layer, {}, out)
    problem.space = (
        load_space(space, base) if space is not None else default_space(problem.config({}, out))
    )
    problem.check(f"space file {space}" if space is not None else "the default search space")
    data = build_data(base.data)
    task = build_task(data, base)
    selection = Validation(base.validation, task, base.optim.epochs, base.method, data.modalities)
    direction = "minimize" if selection.metric in LOWER_IS_BETTER else "maximize"
    record = {
        "config": {k: v for k, v in to_dict(problem.config({}, out)).items() if k != "out"},
        "space": {key: param.record() for key, param in problem.space.items()},
    }
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial's line is ours
    if isinstance(pruner, str):
        pruner = make_pruner(pruner, base.optim.epochs)
    lock = folder_lock(out / ".tune.lock") if storage is None else contextlib.nullcontext()
    with lock, warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        db = _storage(storage, out)
        study = optuna.create_study(
            study_name=study_name(out),
            storage=db,
            sampler=optuna.samplers.TPESampler(seed=_sampler_seed(seed, db, out, storage)),
            pruner=pruner,
            direction=direction,
            load_if_exists=True,
        )
        check_record(study, record, out)
        atomic_write_text(out / "space.yaml", yaml.safe_dump(record["space"], sort_keys=False))
        if storage is None:
            for number in requeue_stale(study, db):
                print(
                    f"trial {number} was running when tuning stopped: marked FAIL, its "
                    "parameters queued again"
                )
        if teacher_dir is not None:
            with folder_lock(out / ".teacher.lock", wait=True):
                train_teacher(problem, data, teacher_dir)
        _optimize(study, problem, data, base, selection.key, trials, timeout)
        return finish(study, problem, selection.key, direction)


def _retry_callback() -> Any:
    """Optuna's callback that queues a stale trial again (renamed in Optuna 4.9)."""
    import optuna

    new = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    return new or optuna.storages.RetryFailedTrialCallback


def _retry_keyword() -> str:
    import optuna

    new = hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback")
    return "heartbeat_stale_trial_callback" if new else "failed_trial_callback"


def _storage(url: str | None, out: Path) -> Any:
    """The folder's SQLite file, or an RDB URL with heartbeats: a trial whose worker died
    is marked FAIL after the grace period and its parameters retried once."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    if url is None:
        out.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(default_storage(out))
    retry = {_retry_keyword(): _retry_callback()(max_retry=1)}
    try:
        return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180, **retry)
    except (ImportError, ValueError, optuna.exceptions.OptunaError, SQLAlchemyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"--storage {url!r}: {first}") from None


def _sampler_seed(seed: int, storage: Any, out: Path, url: str | None) -> int:
    """``seed`` plus the trials the study already holds, so that a resumed study does not
    draw its first trials' parameters again; with an RDB URL plus the process id too, so
    that workers started together draw different ones."""
    try:
        study_id = storage.get_study_id_from_name(study_name(out))
        started = len(storage.get_all_trials(study_id, deepcopy=False))
    except KeyError:
        started = 0
    return (seed + started + (os.getpid() if url is not None else 0)) % 2**32


def _finished(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _optimize(
    study: Any,
    problem: Study,
    data: Any,
    base: Config,
    key: str,
    trials: int,
    timeout: float | None,
) -> None:
    """Run trials until the study holds ``trials`` finished ones (or ``timeout`` seconds,
    or ``trials`` failures in a row)."""
    import optuna
    from tqdm import tqdm

    from mmanet.data import build_data
    from mmanet.engine import Trainer
    from mmanet.progress import show_progress

    done = _finished(study)
    if done >= trials:
        return
    failures = 0

    def objective(trial: optuna.Trial) -> float:
        params = {name: param.suggest(trial) for name, param in problem.space.items()}
        run_dir = problem.out / "trials" / f"{trial.number:04d}"
        config = problem.config(params, run_dir)
        trial_data = data if config.data == base.data else build_data(config.data)
        trainer = Trainer(config, trial_data)

        def report(epoch: int, value: float) -> None:
            trial.set_user_attr("epochs", epoch)
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        trainer.on_validation = report
        try:
            with _quiet(run_dir / "stdout.log"):
                trainer.fit(overwrite=True, test=False)
        except TrainingInterrupted as err:
            study.enqueue_trial(params, user_attrs={"retry_of": trial.number})
            raise TuneInterrupted(err.signum, problem.out) from None
        except TrainingError as err:  # e.g. a non-finite loss: this trial fails, not the study
            trial.set_user_attr("fail_reason", str(err).splitlines()[0])
            raise
        trial.set_user_attr("best_epoch", trainer.validation.best_epoch)
        value = trainer.validation.best
        if value is None or math.isnan(value):
            trial.set_user_attr("fail_reason", f"{key} is NaN")
            raise TrainingError(f"trial {trial.number}: {key} is NaN")
        return value

    bar = tqdm(
        total=trials,
        initial=done,
        desc="trials",
        unit="trial",
        disable=not show_progress(base.progress),
        dynamic_ncols=True,
    )

    def after(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal failures
        failures = failures + 1 if trial.state.name == "FAIL" else 0
        value = "" if trial.value is None else f" {key} {trial.value:.4g}"
        if "fail_reason" in trial.user_attrs:
            value = f" ({trial.user_attrs['fail_reason']})"
        epochs = trial.user_attrs.get("epochs", 0)
        params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        bar.write(
            f"trial {trial.number} {trial.state.name.lower()}{value} ({epochs} epochs): {params}"
        )
        bar.update(1 if trial.state.name in ("COMPLETE", "PRUNED") else 0)
        write_trials(study, problem.out / "trials.csv")
        if _finished(study) >= trials or failures >= trials:
            study.stop()

    with bar:
        study.optimize(
            objective, n_trials=None, timeout=timeout, callbacks=[after], catch=(TrainingError,)
        )


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# -- outputs ------------------------------------------------------------------------------


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One row per trial: number, state, value, epochs run, best epoch, seconds, the
    parameters, and the trial it retries (a killed or interrupted one)."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        seconds = trial.duration.total_seconds() if trial.duration is not None else None
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "value": trial.value,
                "epochs": trial.user_attrs.get("epochs", 0),
                "best_epoch": trial.user_attrs.get("best_epoch"),
                "seconds": None if seconds is None else round(seconds, 1),
                **trial.params,
                "retry_of": trial.user_attrs.get(
                    "retry_of", _retry_callback().retried_trial_number(trial)
                ),
                "fail_reason": trial.user_attrs.get("fail_reason"),
            }
        )
    return rows


def write_trials(study: Any, path: Path) -> None:
    """``trials.csv`` (atomically)."""
    rows = trial_rows(study)
    fields = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def finish(study: Any, problem: Study, key: str, direction: str) -> dict[str, Any]:
    """Write ``trials.csv``, ``best.yaml`` and ``search.png``; print the best trials."""
    from optuna.trial import TrialState

    from mmanet.report import _render

    out = problem.out
    write_trials(study, out / "trials.csv")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = None
    if complete:
        trial = study.best_trial
        best = {"number": trial.number, "value": trial.value, "params": dict(trial.params)}
        write_best(study, problem, trial, key)
    importances = write_plot(study, out / "search.png", key, direction)
    counts = {state: 0 for state in ("COMPLETE", "PRUNED", "FAIL")}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    print(
        f"\n{len(study.trials)} trials: {counts['COMPLETE']} complete, {counts['PRUNED']} "
        f"pruned, {counts['FAIL']} failed; {key} on the val split ({direction}d)"
    )
    ranked = sorted(complete, key=lambda t: t.value, reverse=direction == "maximize")[:5]
    if ranked:
        names = list(problem.space)
        header = ["trial", key, "epochs", *names]
        rows = [
            [str(t.number), f"{t.value:.4g}", str(t.user_attrs.get("epochs", "")),
             *[_short(t.params.get(n, "")) for n in names]]
            for t in ranked
        ]  # fmt: skip
        print(_render(header, rows, markdown=False))
    if importances:
        print("importance: " + ", ".join(f"{k} {v:.2f}" for k, v in importances.items()))
    written = ["trials.csv", "search.png", *(["best.yaml"] if best else [])]
    print(f"written in {out}: {', '.join(written)}")
    if best:
        print(f"reproduce the best trial: mmanet train --config {out / 'best.yaml'}")
    return {"best": best, "trials": trial_rows(study), "direction": direction, "metric": key}


def write_best(study: Any, problem: Study, trial: Any, key: str) -> None:
    """``best.yaml``: the full config of ``trial``, training into ``DIR/best``, under a
    header saying how it was found."""
    config = problem.config(trial.params, problem.out / "best")
    finished = _finished(study)
    params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    header = [
        f"# Found by `mmanet tune` in {problem.out}: trial {trial.number} of {finished} "
        f"finished trials, best {key} = {trial.value:.6g}",
        f"# at epoch {trial.user_attrs.get('best_epoch')} on the validation split (the test "
        "split was not used).",
        f"# Sampled: {params}.",
        f"# Reproduce: mmanet train --config {problem.out / 'best.yaml'}",
    ]
    text = "\n".join(header) + "\n" + yaml.safe_dump(to_dict(config), sort_keys=False)
    atomic_write_text(problem.out / "best.yaml", text)


def write_plot(study: Any, path: Path, key: str, direction: str) -> dict[str, float]:
    """``search.png``: the value of every trial (pruned ones at their last report) with the
    running best; and the parameter importances (fANOVA) when two trials are complete.
    Returns the importances ({} when there are none)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from matplotlib.ticker import MaxNLocator
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    importances: dict[str, float] = {}
    note = f"importances need 2 complete trials ({len(complete)} so far)"
    if len(complete) >= 2:
        try:
            importances = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError) as err:
            note = f"no importances: {err}"
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    better = min if direction == "minimize" else max
    xs, best, running = [], [], None
    for t in complete:
        running = t.value if running is None else better(running, t.value)
        xs.append(t.number)
        best.append(running)
    left.scatter([t.number for t in complete], [t.value for t in complete], label="complete")
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    if pruned:
        last = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
        left.scatter([t.number for t in pruned], last, marker="x", color="grey", label="pruned")
    if xs:
        left.step(xs, best, where="post", color="C1", label="best so far")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_xlabel("trial")
    left.set_ylabel(f"{key} (val)")
    left.set_title(f"{key} per trial ({direction})")
    left.legend()
    if importances:
        names = list(importances)[::-1]
        right.barh(names, [importances[n] for n in names])
        right.set_xlabel("importance (fANOVA)")
        right.set_title(f"parameter importances ({len(complete)} complete trials)")
    else:
        right.axis("off")
        right.text(0.5, 0.5, note, ha="center", va="center", wrap=True)
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    plt.close(figure)
    return {k: float(v) for k, v in importances.items() if not math.isnan(v)}


__all__ = [
    "PRUNERS",
    "Param",
    "Study",
    "TuneInterrupted",
    "default_space",
    "load_space",
    "make_pruner",
    "parse_space",
    "tune",
]
