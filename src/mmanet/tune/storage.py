"""Where a study lives and who may write it: the folder's SQLite file or an RDB URL, the
study's name and record, the folder locks, trials left running by a killed process, the
sampler's seed and the pruners."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmanet.config import differences
from mmanet.errors import ConfigError

STUDY_RECORD = "mmanet"  # the study's user attribute recording what it tunes
PRUNERS = ("median", "halving", "none")


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
                "trials side by side with --jobs N (or workers with an RDB --storage URL)"
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


def _retry_callback() -> Any:
    """Optuna's callback that queues a stale trial again (renamed in Optuna 4.9)."""
    import optuna

    new = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    return new or optuna.storages.RetryFailedTrialCallback


def _retry_keyword() -> str:
    import optuna

    new = hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback")
    return "heartbeat_stale_trial_callback" if new else "failed_trial_callback"


def open_storage(url: str | None, out: Path) -> Any:
    """The folder's SQLite file, or an RDB URL with heartbeats: a trial whose worker died
    is marked FAIL after the grace period and its parameters retried once. Workers side by
    side on this machine share the SQLite file: a writer waits up to a minute for another's
    write (SQLite's default, 5 s, is short for a busy machine)."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    if url is None:
        out.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(
            default_storage(out), engine_kwargs={"connect_args": {"timeout": 60}}
        )
    retry = {_retry_keyword(): _retry_callback()(max_retry=1)}
    try:
        return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180, **retry)
    except (ImportError, ValueError, optuna.exceptions.OptunaError, SQLAlchemyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"--storage {url!r}: {first}") from None


def sampler_seed(seed: int, storage: Any, out: Path, url: str | None, worker: int = 0) -> int:
    """A seed drawn from ``seed``, the trials the study already holds (so that a resumed
    study does not draw its first trials' parameters again) and the ``worker``'s index (so
    that workers side by side draw different ones), with an RDB URL the process id too
    (workers started by hand). Mixed by a SeedSequence: no two such tuples share a seed by
    arithmetic accident (seed + 1 trial + worker 0 = seed + 0 trials + worker 1)."""
    import numpy as np

    try:
        study_id = storage.get_study_id_from_name(study_name(out))
        started = len(storage.get_all_trials(study_id, deepcopy=False))
    except KeyError:
        started = 0
    entropy = [seed % 2**32, started, worker, os.getpid() if url is not None else 0]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def finished_count(study: Any) -> int:
    """The trials of ``study`` that count towards ``--trials``: complete or pruned."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def running_count(study: Any) -> int:
    """The trials of ``study`` running now, here or in another worker."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
