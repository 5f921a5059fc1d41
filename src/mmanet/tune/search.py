"""Running a study: the shared teacher, the trials (one after another here, or side by
side on the scheduler's workers, each drawing from the same storage), and interruption."""

from __future__ import annotations

import contextlib
import math
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mmanet.config import Config, build_config, deep_merge, parse_overrides, to_dict
from mmanet.errors import ConfigError, TrainingError, TrainingInterrupted
from mmanet.io import atomic_write_text
from mmanet.scheduler import Backend, run_phases
from mmanet.tune.outputs import finish, trial_line, write_trials
from mmanet.tune.space import Param, default_space, load_space, nested
from mmanet.tune.storage import (
    check_record,
    finished_count,
    folder_lock,
    make_pruner,
    open_storage,
    requeue_stale,
    running_count,
    sampler_seed,
    study_name,
)


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


class TuneInterrupted(TrainingInterrupted):
    """SIGINT / SIGTERM during a trial: the trial's parameters are queued again, and the
    same command continues the study."""

    def __init__(self, signum: int, out: Path) -> None:
        Exception.__init__(
            self, f"tuning interrupted; run the same command to continue the study in {out}"
        )
        self.signum, self.checkpoint = signum, None


@dataclass(frozen=True)
class Search:
    """What every process running trials of one study needs (sent once to each worker)."""

    problem: Study
    base: Config  # the config of the trials before their parameters
    data: Any
    key: str  # the selection value: the objective
    direction: str  # "minimize" or "maximize"
    trials: int  # finished trials the study is to hold
    deadline: float | None  # no trial starts after this time (time.time())
    storage: str | None  # an RDB URL, or None: the folder's SQLite file
    seed: int  # the sampler's seed before the trials already held are added
    pruner: str | Any  # a name of PRUNERS, or an Optuna pruner

    def open(self, worker: int | None = None, storage: Any = None) -> Any:
        """The study, created on first use, through ``storage`` (default: a new connection
        to :attr:`storage`); ``worker`` (side by side): its index, which shifts its
        sampler's seed, and TPE's constant liar (running trials count as bad ones, so that
        workers do not all sample the same region)."""
        import optuna

        storage = storage or open_storage(self.storage, self.problem.out)
        seed = sampler_seed(self.seed, storage, self.problem.out, self.storage, worker or 0)
        sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=worker is not None)
        pruner = self.pruner
        if isinstance(pruner, str):
            pruner = make_pruner(pruner, self.base.optim.epochs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.create_study(
                study_name=study_name(self.problem.out),
                storage=storage,
                sampler=sampler,
                pruner=pruner,
                direction=self.direction,
                load_if_exists=True,
            )


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
    jobs: int = 1,
    backend: str = "process",
    address: str | None = None,
    gpus_per_run: float = 0.0,
) -> dict[str, Any]:
    """Search ``trials`` finished (complete or pruned) trials of ``method`` on the val split
    and write ``best.yaml``, ``trials.csv`` and ``search.png`` in ``out``; rerunning the
    same call continues the study. ``seed`` seeds the sampler (every trial trains with the
    config's ``seed``); ``pruner``: a name of :data:`PRUNERS` or an Optuna pruner;
    ``jobs`` trials at a time on ``backend`` (``process``: a pool of processes on this
    machine; ``ray``: Ray workers, a local Ray or the cluster at ``address``, each reserving
    ``gpus_per_run``), every worker drawing its trials from the same study.
    Returns ``{"best": {...} | None, "trials": [...], "direction", "metric"}``."""
    import optuna

    from mmanet.data import build_data
    from mmanet.engine.selection import Validation
    from mmanet.methods import get_method
    from mmanet.tasks import build_task

    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    if address is not None and storage is None:
        raise ConfigError(
            "--address: the workers of a cluster share the study through an RDB --storage "
            "URL (the folder's SQLite file is on this machine only)"
        )
    out = Path(out)
    given = overrides if isinstance(overrides, Mapping) else parse_overrides(overrides)
    layer = deep_merge(dict(given), {"method": {"name": method}, "validation": {"every": 1}})
    base = build_config(config_path, layer)
    scheduler = Backend(backend, jobs, address, gpus_per_run, cpus_per_run=max(base.threads, 1))
    scheduler.check_device(base.device)
    if get_method(method).per_combination and base.method.combination is None:
        raise ConfigError(
            f"tune: {method} trains one model per combination; name one with method.combination="
        )
    teacher_dir = None
    if base.method.uses_teacher and base.method.teacher is None:
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
    direction = "minimize" if selection.lower_is_better else "maximize"
    record = {
        "config": {k: v for k, v in to_dict(problem.config({}, out)).items() if k != "out"},
        "space": {key: param.record() for key, param in problem.space.items()},
    }
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial's line is ours
    deadline = None if timeout is None else time.time() + timeout
    search = Search(
        problem, base, data, selection.key, direction, trials, deadline, storage, seed, pruner
    )
    lock = folder_lock(out / ".tune.lock") if storage is None else contextlib.nullcontext()
    with lock, warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        db = open_storage(storage, out)
        study = search.open(storage=db)
        check_record(study, record, out)
        atomic_write_text(out / "space.yaml", yaml.safe_dump(record["space"], sort_keys=False))
        if storage is None:  # the lock is ours: a RUNNING trial was left by a killed process
            for number in requeue_stale(study, db):
                print(
                    f"trial {number} was running when tuning stopped: marked FAIL, its "
                    "parameters queued again"
                )
        if teacher_dir is not None:
            with folder_lock(out / ".teacher.lock", wait=True):
                train_teacher(problem, data, teacher_dir)
        log = TrialLog(selection.key, trials, finished_count(study), out, base.progress)
        with log:
            if scheduler.sequential:
                optimize(study, search, log)
            else:
                _side_by_side(search, scheduler, study, log)
        return finish(study, problem, selection.key, direction)


class TrialLog:
    """The study's progress where it was started: a bar of finished trials, one line per
    trial as it ends, and ``trials.csv`` rewritten after each."""

    def __init__(self, key: str, trials: int, done: int, out: Path, progress: bool) -> None:
        from tqdm import tqdm

        from mmanet.progress import show_progress

        self.key, self.out, self.seen = key, out, set[int]()
        self.bar = tqdm(
            total=trials,
            initial=done,
            desc="trials",
            unit="trial",
            disable=not show_progress(progress),
            dynamic_ncols=True,
        )

    def __enter__(self) -> TrialLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def ended(self, study: Any, trial: Any) -> None:
        """``trial`` of ``study`` has ended (once per trial)."""
        if trial.number in self.seen:
            return
        self.seen.add(trial.number)
        self.bar.write(trial_line(trial, self.key))
        self.bar.update(1 if trial.state.name in ("COMPLETE", "PRUNED") else 0)
        write_trials(study, self.out / "trials.csv")

    def follow(self, study: Any, since: set[int]) -> None:
        """Report the trials of ``study`` that ended, except those numbered in ``since``."""
        for trial in study.get_trials(deepcopy=False):
            if trial.state.is_finished() and trial.number not in since:
                self.ended(study, trial)


def optimize(study: Any, search: Search, log: TrialLog | None = None) -> None:
    """Run trials of ``study`` until it holds ``search.trials`` finished ones, counting
    those running elsewhere (or until the deadline, or ``trials`` failures in a row here);
    ``log`` reports each trial run here as it ends."""
    objective = _objective(study, search)
    failures = 0

    def ended(study: Any, trial: Any) -> None:
        nonlocal failures
        failures = failures + 1 if trial.state.name == "FAIL" else 0
        if log is not None:
            log.ended(study, trial)

    while finished_count(study) + running_count(study) < search.trials:
        if failures >= search.trials or (
            search.deadline is not None and time.time() >= search.deadline
        ):
            return
        study.optimize(objective, n_trials=1, callbacks=[ended], catch=(TrainingError,))


def _objective(study: Any, search: Search) -> Any:
    import optuna

    from mmanet.data import build_data
    from mmanet.engine import Trainer

    problem, key = search.problem, search.key

    def objective(trial: optuna.Trial) -> float:
        params = {name: param.suggest(trial) for name, param in problem.space.items()}
        run_dir = problem.out / "trials" / f"{trial.number:04d}"
        config = problem.config(params, run_dir)
        data = search.data if config.data == search.base.data else build_data(config.data)
        trainer = Trainer(config, data)

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

    return objective


def search_worker(search: Search, worker: int) -> int:
    """One worker of a study run side by side (a job of :func:`run_phases`): trials until
    the study holds enough; its lines are the driver's to print."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optimize(search.open(worker), search)
    return worker


def _side_by_side(search: Search, backend: Backend, study: Any, log: TrialLog) -> None:
    """``backend.jobs`` workers run trials of the study; this process follows the storage
    and reports each trial as it ends."""
    import signal

    before = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    stop = threading.Event()

    def follow() -> None:
        watcher = search.open()  # its own connection, in this thread
        while not stop.wait(1.0):
            log.follow(watcher, before)

    thread = threading.Thread(target=follow, name="mmanet-tune-follow", daemon=True)
    thread.start()
    try:
        jobs = list(range(backend.jobs))
        run_phases(search_worker, [jobs], search, backend, search.base.imports, progress=False)
    except KeyboardInterrupt:
        raise TuneInterrupted(signal.SIGINT, search.problem.out) from None
    finally:
        stop.set()
        thread.join()
        log.follow(study, before)  # the trials that ended since the last look


__all__ = ["Search", "Study", "TrialLog", "TuneInterrupted", "optimize", "search_worker", "tune"]
