"""Run a list of phases of independent jobs: the jobs of a phase side by side, the phases
one after another (a comparison's teachers before the students that distil from them).

A *job* is any picklable value; ``function(shared, job)`` runs it and returns its
(picklable) result, where ``function`` is a module-level function and ``shared`` the
data every job reads (sent once to each worker, not once per job). Where the jobs run is
a :class:`Backend`:

- ``process`` with ``jobs=1``: one after another, in this process;
- ``process`` with ``jobs>1``: a pool of that many spawned processes on this machine;
- ``ray``: ``jobs`` workers (Ray actors) of a local Ray started for the call (on the
  loopback address only) or, with ``address``, of an existing cluster. Each reserves
  ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs (a fraction shares one GPU between
  runs). Ray is an optional dependency: ``pip install -e '.[cluster]'``.

Every worker imports the user's modules (the config's ``imports``) before it unpickles
``shared``, whose objects may be of their types. A job that raises stops the others, and
its exception is raised again here with its own message. Ray is never the default: it
costs seconds and hundreds of MB to start, and the backend chosen must not depend on
which packages happen to be installed.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from mmanet.errors import ConfigError, TrainingError
from mmanet.plugins import import_user_modules

BACKENDS = ("process", "ray")
RAY_MISSING = "--backend ray needs Ray, which is not installed: pip install -e '.[cluster]'"


@dataclass(frozen=True)
class Backend:
    """Where and how many jobs run at a time (see the module's docstring)."""

    name: str = "process"
    jobs: int = 1  # jobs at a time
    address: str | None = None  # ray: an existing cluster (None: a local Ray)
    gpus_per_run: float = 0.0  # ray: GPUs each job reserves
    cpus_per_run: int = 1  # ray: CPUs each job reserves (its torch threads)

    def __post_init__(self) -> None:
        if self.name not in BACKENDS:
            raise ConfigError(f"unknown --backend {self.name!r}; use one of {', '.join(BACKENDS)}")
        if self.jobs < 1:
            raise ConfigError(f"--jobs must be >= 1, got {self.jobs}")
        if self.name != "ray" and (self.address is not None or self.gpus_per_run):
            flag = "--address" if self.address is not None else "--gpus-per-run"
            raise ConfigError(f"{flag} needs --backend ray")
        gpus = self.gpus_per_run
        if gpus < 0 or (gpus > 1 and gpus != int(gpus)):
            raise ConfigError(
                f"--gpus-per-run must be a fraction in [0, 1] or a whole number, got {gpus:g}"
            )
        if self.cpus_per_run < 1:
            raise ConfigError(f"CPUs per run must be >= 1, got {self.cpus_per_run}")
        if self.name == "ray":
            import_ray()  # now, not after the data were loaded

    def check_device(self, device: str) -> None:
        """A :class:`ConfigError` when the jobs' ``device`` (the config key) and the GPUs
        they reserve disagree: GPUs reserved for runs on the CPU, or runs on CUDA that
        reserve none (Ray would neither place them on GPU nodes nor keep them apart)."""
        if self.gpus_per_run and device == "cpu":
            raise ConfigError(
                f"--gpus-per-run {self.gpus_per_run:g} reserves GPUs for runs that train on "
                "the CPU (device=cpu); add device=cuda"
            )
        if self.name == "ray" and not self.gpus_per_run and device.startswith("cuda"):
            raise ConfigError(
                f"device={device} on Ray needs --gpus-per-run (e.g. 0.5: two runs per GPU)"
            )

    @property
    def sequential(self) -> bool:
        """Whether the jobs run one after another in this process."""
        return self.name == "process" and self.jobs == 1


def run_phases(
    function: Callable[[Any, Any], Any],
    phases: Sequence[Sequence[Any]],
    shared: Any = None,
    backend: Backend | None = None,
    imports: Sequence[str] = (),
    progress: bool = True,
    label: Callable[[Any], str] = str,
) -> list[list[Any]]:
    """Run ``function(shared, job)`` for every job of every phase, phase after phase, on
    ``backend`` (default: one after another here); return the results, per phase, in the
    order of its jobs. A bar counts the finished jobs and names the last by ``label``."""
    backend = backend or Backend()
    # Ray first: one that cannot start or be joined is an error before any bar is drawn
    started = backend.name == "ray" and init_ray(backend)
    bar = tqdm(
        total=sum(len(phase) for phase in phases),
        desc=f"runs{' on Ray' if backend.name == 'ray' else ''}, {backend.jobs} at a time",
        unit="run",
        disable=not progress or backend.sequential,  # a sequential job draws its own bars
        dynamic_ncols=True,
    )
    results = [[None] * len(phase) for phase in phases]
    if backend.sequential:
        import_user_modules(imports)  # as the workers do (once per process: usually done)
        finished = _sequential(function, phases, shared)
    elif backend.name == "process":
        finished = _in_processes(function, phases, shared, backend.jobs, imports)
    else:
        finished = _on_ray(function, phases, shared, backend, imports, label, started)
    with bar, contextlib.closing(finished):  # closed: its workers stop, whatever happens here
        for index, (position, result) in finished:
            results[index][position] = result
            bar.set_postfix_str(f"finished {label(phases[index][position])}", refresh=False)
            bar.update()
    return results


# Each backend yields (phase index, (job index, result)) as the jobs finish; a phase's
# jobs start only after the previous phase's have all finished.
Finished = Iterator[tuple[int, tuple[int, Any]]]


def _sequential(
    function: Callable[[Any, Any], Any], phases: Sequence[Sequence], shared: Any
) -> Finished:
    for index, phase in enumerate(phases):
        for position, job in enumerate(phase):
            yield index, (position, function(shared, job))


# The process backend -------------------------------------------------------------------

_worker: dict[str, Any] = {}


def _init_worker(imports: list[str], payload: bytes) -> None:
    # The workers draw no bars. tqdm's default lock holds a named semaphore that a spawned
    # process registers with the parent's resource tracker: a thread lock needs none.
    tqdm.set_lock(threading.RLock())
    # Nor do they print: runs side by side would interleave their start-up summaries and
    # epoch lines under the parent's bar; each run's log is in its folder (log.jsonl).
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- for the worker's lifetime
    try:
        import_user_modules(imports)  # before the data are unpickled: they may be of their types
        _worker["function"], _worker["shared"] = pickle.loads(payload)
    except Exception as err:  # raised by the jobs: a pool would restart a failed initializer
        _worker["error"] = err


def _process_job(item: tuple[int, Any]) -> tuple[int, Any]:
    if "error" in _worker:
        raise _worker["error"]
    position, job = item
    return position, _worker["function"](_worker["shared"], job)


def _in_processes(
    function: Callable[[Any, Any], Any],
    phases: Sequence[Sequence],
    shared: Any,
    jobs: int,
    imports: Sequence[str],
) -> Finished:
    """A pool of ``jobs`` spawned processes (no fork of a process holding threads)."""
    context = multiprocessing.get_context("spawn")
    initargs = (list(imports), pickle.dumps((function, shared)))
    pool = context.Pool(jobs, initializer=_init_worker, initargs=initargs)
    try:
        for index, phase in enumerate(phases):
            for finished in pool.imap_unordered(_process_job, list(enumerate(phase))):
                yield index, finished
        pool.close()  # the workers finish and exit by themselves, running their exit handlers
    except BaseException:
        pool.terminate()  # a failed job or an interrupt: stop the others
        raise
    finally:
        pool.join()  # no worker outlives the call (nor is killed as the parent exits)


# The Ray backend -----------------------------------------------------------------------


def import_ray() -> Any:
    """The ``ray`` module, or a one-line :class:`ConfigError` naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


@contextlib.contextmanager
def _local_only() -> Iterator[None]:
    """While a local Ray starts: on the loopback address (Ray's own switch for a one-machine
    Ray; else every server listens on all interfaces at the address Ray finds by routing
    towards a public one), and with no usage statistics sent (Ray's default for a local
    Ray is to report them)."""
    from ray._private import ray_constants

    switches = {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # read by the processes Ray starts
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_USAGE_STATS_PROMPT_ENABLED": "0",
    }
    before = {name: os.environ.get(name) for name in switches}
    cluster = ray_constants.ENABLE_RAY_CLUSTER  # read when ray was imported
    os.environ.update(switches)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def init_ray(backend: Backend) -> bool:
    """Connect to ``backend``'s Ray: the one this process already joined, else the cluster
    at ``address``, else a new local Ray with CPUs for ``jobs`` runs; returns whether this
    call started it (then :func:`run_phases` shuts it down after its jobs). Ray's own
    messages stay in its log files (``/tmp/ray/session_*/logs``), not in the terminal."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    if backend.address is not None:
        try:
            ray.init(address=backend.address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(
                f"--address {backend.address}: cannot join the Ray cluster ({first})"
            ) from None
        return True
    with _local_only():
        ray.init(address="local", num_cpus=backend.jobs * backend.cpus_per_run, **quiet)
    gpus = ray.cluster_resources().get("GPU", 0)
    if backend.gpus_per_run > gpus:
        ray.shutdown()
        raise ConfigError(
            f"--gpus-per-run {backend.gpus_per_run:g}: this machine's Ray has "
            f"{gpus:g} GPU(s); give --address of a cluster with GPUs, or leave it at 0"
        )
    return True


class _RayWorker:
    """One of the Ray backend's ``jobs`` workers (a Ray actor, so a process of its own that
    holds its CPUs and GPU share): it imports the user's modules, then unpickles the
    function and the shared data, once, and runs jobs one at a time."""

    def __init__(self, imports: list[str], payload: list) -> None:
        import ray

        tqdm.set_lock(threading.RLock())  # as in the process pool
        self.error: Exception | None = None
        try:
            # the user's modules before the data are unpickled: they may be of their types
            import_user_modules(imports)
            (ref,) = payload  # in a list, so that Ray passes the reference, not the object
            self.function, self.shared = pickle.loads(ray.get(ref))
        except Exception as err:  # raised by the jobs, with its own message
            self.error = err

    def run(self, item: tuple[int, Any]) -> tuple[int, Any]:
        """The result of one job, the runs' own printing kept out of Ray's logs."""
        if self.error is not None:
            raise self.error
        position, job = item
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            return position, self.function(self.shared, job)


def _on_ray(
    function: Callable[[Any, Any], Any],
    phases: Sequence[Sequence],
    shared: Any,
    backend: Backend,
    imports: Sequence[str],
    label: Callable[[Any], str],
    started: bool,
) -> Finished:
    """``backend.jobs`` Ray actors, each running one job at a time; a failed job raises its
    error here (with its own message) after the actors were killed, stopping the jobs in
    flight. (Actors, not tasks: cancelling a task as it finishes can abort the driver,
    ray-project/ray#54798.) Ray is shut down after the jobs when it was ``started`` for them."""
    ray = import_ray()
    workers: list[Any] = []
    try:
        payload = [ray.put(pickle.dumps((function, shared)))]
        worker = ray.remote(_RayWorker).options(
            num_cpus=backend.cpus_per_run, num_gpus=backend.gpus_per_run, max_restarts=0
        )
        count = min(backend.jobs, max((len(phase) for phase in phases), default=0))
        workers = [worker.remote(list(imports), payload) for _ in range(count)]
        idle = list(workers)
        pending: dict[Any, Any] = {}  # a running job's result -> (its worker, its position)
        for index, phase in enumerate(phases):
            waiting = list(enumerate(phase))
            while waiting or pending:
                while waiting and idle:
                    item, free = waiting.pop(0), idle.pop()
                    pending[free.run.remote(item)] = (free, item[0])
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                done, position = pending.pop(ref)
                idle.append(done)
                yield index, _ray_result(ray, ref, label(phase[position]))
    finally:
        for done in workers:  # at the end, or after a failed job or an interrupt
            ray.kill(done)
        if started:
            ray.shutdown()


def _ray_result(ray: Any, ref: Any, name: str) -> Any:
    """A finished task's result, or the error it raised, with its own message."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, Exception):
            raise err.cause from None
        raise TrainingError(f"{name}: failed in a Ray worker ({_first_line(err)})") from None
    except ray.exceptions.RayError as err:  # the worker died, ran out of memory, ...
        raise TrainingError(f"{name}: the Ray worker failed ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0].strip()}" if lines else type(err).__name__


__all__ = ["BACKENDS", "Backend", "import_ray", "init_ray", "run_phases"]
