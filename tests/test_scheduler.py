"""Scheduling runs (:mod:`mmanet.scheduler`): the phases in order on every backend, the
results in the jobs' order, a failed job's own one-line error with the others stopped;
``compare`` on a local Ray gives the sequential comparison's numbers, every run trained
in a Ray worker. Ray starts once for the module, listens on the loopback address only,
and leaves no process behind."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import pytest

from conftest import fast_overrides
from mmanet import experiment
from mmanet.cli import main
from mmanet.errors import ConfigError
from mmanet.plugins import import_user_modules
from mmanet.scheduler import RAY_MISSING, Backend, init_ray, run_phases

needs_ray = pytest.mark.skipif(find_spec("ray") is None, reason="Ray is not installed")

# The jobs of the phase tests, in a module of the user's (imported by path in every worker
# before the shared data are unpickled). A job: (name, seconds, names finished before).
JOBS = """
import os
import time
from pathlib import Path


def job(folder, job):
    name, seconds, after = job
    missing = [other for other in after if not (Path(folder) / other).is_file()]
    if missing:
        raise RuntimeError(f"{name} started before {', '.join(missing)} finished")
    if name == "bad":
        raise ValueError("the bad job failed")
    time.sleep(seconds)
    (Path(folder) / name).write_text(str(os.getpid()))
    return name.upper(), os.getpid()
"""

COMPARE = ["compare", "--methods", "hemis,sf_mad", "--seeds", "2", "--no-figures"]
SETTINGS = [
    *(a for a in fast_overrides("unused") if not a.startswith("out=")),
    "optim.epochs=2",
    "optim.milestones=[1]",
    "method.mar.warmup_epochs=1",
    "data.modalities=[fou,kar,mor]",
    "model.encoder.widths=[16]",
    "model.head_widths=[16]",
    "threads=1",
]


def _parents() -> dict[int, int]:
    """Every process's parent."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    return parents


def descendants(pid: int) -> set[int]:
    parents, found, new = _parents(), set(), {pid}
    while new:
        new = {child for child, parent in parents.items() if parent in new} - found
        found |= new
    return found


def ray_processes() -> set[int]:
    """The running processes of Ray (of any session): its servers and workers."""
    found = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if command.startswith("ray::") or "/site-packages/ray/" in command:
            found.add(int(cmdline.parent.name))
    return {pid for pid in found if alive(pid)}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def listening(pids: set[int]) -> set[str]:
    """The local addresses of the TCP sockets these processes listen on."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*") if Path(f"/proc/{pid}").exists() else []:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    addresses = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(fields[1].partition(":")[0])
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            addresses.add(socket.inet_ntop(family, raw))
    return addresses


def wait_for_exit(pids: set[int], seconds: float = 20.0) -> list[int]:
    """The processes of ``pids`` still running after waiting up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [pid for pid in pids if alive(pid)]


@needs_ray
def test_a_ray_started_for_the_jobs_is_shut_down_after_them(tmp_path, jobs_module):
    """First in the file: before :func:`local_ray` starts the module's Ray."""
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray already runs in this process")
    before = ray_processes()
    ours = Backend("ray", jobs=1)
    phases = [[("a", 0.0, ())]]
    assert run_phases(job_function(jobs_module), phases, str(tmp_path), ours, [jobs_module])
    assert not ray.is_initialized()
    assert wait_for_exit(ray_processes() - before) == []


@needs_ray
def test_more_gpus_than_a_local_ray_has_is_one_line_and_stops_it():
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray already runs in this process")
    before = ray_processes()
    with pytest.raises(ConfigError, match=r"^--gpus-per-run 64: this machine's Ray has \d+ GPU"):
        init_ray(Backend("ray", gpus_per_run=64))
    assert not ray.is_initialized()
    assert wait_for_exit(ray_processes() - before) == []


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray for two runs at a time, shut down after the module's tests."""
    import ray

    before = descendants(os.getpid())  # e.g. multiprocessing's resource tracker
    others = ray_processes()  # none, unless another Ray runs on this machine
    assert init_ray(Backend("ray", jobs=2))
    try:
        context = ray.get_runtime_context()
        assert context.gcs_address.startswith("127.0.0.1:")
        yield ray
        started = descendants(os.getpid()) - before  # the GCS, the raylet, its workers, ...
        assert started
        assert listening(started) <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}
    finally:
        ray.shutdown()
    left = wait_for_exit(started | (ray_processes() - others))
    assert left == [], "Ray processes outlived the shutdown"


@pytest.fixture(scope="module")
def jobs_module(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("user") / "phase_jobs.py"
    path.write_text(JOBS)
    import_user_modules([str(path)])  # its functions pickle under the name workers give it
    return str(path)


BACKENDS = {
    "sequential": Backend("process", jobs=1),
    "processes": Backend("process", jobs=2),
    "ray": Backend("ray", jobs=2) if find_spec("ray") else None,
}


def backend(name: str, request) -> Backend:
    if name == "ray":
        if BACKENDS["ray"] is None:
            pytest.skip("Ray is not installed")
        request.getfixturevalue("local_ray")
    return BACKENDS[name]


def job_function(jobs_module: str):
    """The module's job function (the module imported by :func:`jobs_module`)."""
    return sys.modules[f"mmanet_user_{Path(jobs_module).stem}"].job


@pytest.mark.parametrize("name", list(BACKENDS))
def test_the_phases_run_in_order_and_the_results_come_in_the_jobs_order(
    name, request, tmp_path, jobs_module
):
    phases = [
        [("a", 0.8, ()), ("b", 0.0, ())],  # with two at a time, b ends long before a
        [("c", 0.0, ("a", "b")), ("d", 0.0, ("a", "b"))],
    ]
    results = run_phases(
        job_function(jobs_module),
        phases,
        str(tmp_path),
        backend(name, request),
        imports=[jobs_module],
        progress=False,
    )
    assert [[result[0] for result in phase] for phase in results] == [["A", "B"], ["C", "D"]]
    pids = {pid for phase in results for _, pid in phase}
    assert (pids == {os.getpid()}) == (name == "sequential")


@pytest.mark.parametrize("name", list(BACKENDS))
def test_a_failed_job_raises_its_own_error_and_stops_the_others(
    name, request, tmp_path, jobs_module
):
    phases = [[("bad", 0.0, ()), ("slow", 3.0, ())], [("later", 0.0, ())]]
    where = backend(name, request)  # Ray started before the clock
    started = time.monotonic()
    with pytest.raises(ValueError) as raised:
        run_phases(job_function(jobs_module), phases, str(tmp_path), where, [jobs_module], False)
    assert str(raised.value) == "the bad job failed"
    assert time.monotonic() - started < 3.0  # not after the slow job
    if name != "sequential":  # where the slow job started beside the bad one
        time.sleep(max(0.0, started + 4.0 - time.monotonic()))
    assert list(tmp_path.iterdir()) == []  # the slow job was stopped, no later one started


def test_backend_options_that_do_not_fit_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"^--address needs --backend ray$"):
        Backend("process", jobs=2, address="10.0.0.1:6379")
    with pytest.raises(ConfigError, match=r"^--gpus-per-run needs --backend ray$"):
        Backend("process", gpus_per_run=0.5)
    with pytest.raises(ConfigError, match="a fraction in"):
        Backend("ray", gpus_per_run=1.5)
    with pytest.raises(ConfigError, match=r"^--jobs must be >= 1, got 0$"):
        Backend("process", jobs=0)


@needs_ray
def test_gpus_and_the_device_must_agree():
    with pytest.raises(ConfigError, match=r"trains? on the CPU \(device=cpu\); add device=cuda"):
        Backend("ray", gpus_per_run=0.5).check_device("cpu")
    with pytest.raises(ConfigError, match="device=cuda on Ray needs --gpus-per-run"):
        Backend("ray").check_device("cuda")
    Backend("ray", gpus_per_run=0.25).check_device("cuda:0")
    Backend("ray").check_device("auto")


def test_asking_for_ray_without_it_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    argv = [*COMPARE, "--backend", "ray", "--out", str(tmp_path / "cmp"), *SETTINGS]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"mmanet: error: {RAY_MISSING}\n"
    assert not (tmp_path / "cmp").exists()
    argv = [*COMPARE, "--address", "127.0.0.1:6379", "--out", str(tmp_path / "cmp"), *SETTINGS]
    assert main(argv) == 2
    assert capsys.readouterr().err == "mmanet: error: --address needs --backend ray\n"


@pytest.fixture(scope="module")
def sequential(tmp_path_factory) -> Path:
    """The comparison trained one run after another in this process."""
    out = tmp_path_factory.mktemp("sequential") / "cmp"
    assert main([*COMPARE, "--jobs", "1", "--no-progress", "--out", str(out), *SETTINGS]) == 0
    return out


def numbers(out: Path) -> dict:
    summary = json.loads((out / "results.json").read_text())
    return {key: summary[key] for key in ("metric", "seeds", "teacher", "methods")}


@needs_ray
def test_compare_on_a_local_ray_equals_the_sequential_comparison(
    local_ray, sequential, tmp_path, monkeypatch
):
    def trained_here(*args, **kwargs):
        raise AssertionError("a run was trained in the driver, not in a Ray worker")

    monkeypatch.setattr(experiment, "Trainer", trained_here)  # the workers import their own
    out = tmp_path / "cmp"
    argv = [*COMPARE, "--backend", "ray", "--jobs", "2", "--no-progress", "--out", str(out)]
    assert main([*argv, *SETTINGS]) == 0
    assert numbers(out) == numbers(sequential)
    runs = sorted(p.name for p in (out / "seed-1").iterdir())
    assert runs == ["hemis", "sf_mad", "teacher"]


@needs_ray
def test_a_run_that_fails_in_a_ray_worker_is_one_line(local_ray, sequential, tmp_path, capsys):
    out = tmp_path / "cmp"
    shutil.copytree(sequential, out)
    (out / "results.json").unlink()
    argv = [*COMPARE, "--backend", "ray", "--jobs", "2", "--no-progress", "--out", str(out)]
    assert main([*argv, *SETTINGS, "optim.lr=0.01"]) == 2  # not the runs' learning rate
    err = capsys.readouterr().err
    assert err.startswith("mmanet: error: ") and err.count("\n") == 1
    assert "/teacher holds a run with another config (" in err
    assert "optim.lr: 0.05 -> 0.01); choose another --out or remove it" in err
    assert not (out / "results.json").exists()


def test_a_comparison_trains_its_teachers_before_the_runs_that_distil():
    from mmanet.config import build_config

    methods, seeds = ["customized", "hemis", "sf_mad"], [0, 1]
    configs = {m: build_config(None, {"method": {"name": m}}) for m in methods}
    first, second = experiment.compare_phases(methods, seeds, configs, ["a", "b", "a+b"], True)
    assert first == [
        ("teacher", 0, None), ("teacher", 1, None),
        ("customized", 0, "a"), ("customized", 0, "b"), ("customized", 0, "a+b"),
        ("hemis", 0, None),
        ("customized", 1, "a"), ("customized", 1, "b"), ("customized", 1, "a+b"),
        ("hemis", 1, None),
    ]  # fmt: skip
    assert second == [("sf_mad", 0, None), ("sf_mad", 1, None)]
    no_teacher = experiment.compare_phases(["hemis"], seeds, configs, [], False)
    assert no_teacher == [[("hemis", 0, None), ("hemis", 1, None)], []]
