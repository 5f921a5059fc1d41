"""``mmanet tune``: the search on the val split (never the test split), best.yaml that
reproduces the best trial, pruning, a kill mid-study and its resumption, bad spaces."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import optuna
import pytest

from mmanet import testing
from mmanet.cli import main
from mmanet.config import build_config
from mmanet.engine import Trainer
from mmanet.engine.checkpoint import read_run_record
from mmanet.errors import ConfigError
from mmanet.experiment import demo_config_path
from mmanet.tune import default_space, tune

# the bundled demo, tiny: 3 of its 6 views, small widths, 3 epochs
TINY = list(testing.TINY)


def trials_csv(out: Path) -> list[dict[str, str]]:
    with open(out / "trials.csv") as handle:
        return list(csv.DictReader(handle))


class PruneAllButTheFirst(optuna.pruners.BasePruner):
    """Prunes every trial but trial 0 at its first report: pruning, made certain."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number > 0


def test_trials_never_touch_the_test_split_and_best_yaml_reproduces(tmp_path, monkeypatch):
    import mmanet.engine.trainer as trainer_module

    splits: list[str] = []
    evaluate = trainer_module.evaluate_split

    def counting(model, data, task, split, *args, **kwargs):
        splits.append(split)
        return evaluate(model, data, task, split, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "evaluate_split", counting)
    out = tmp_path / "tune"
    summary = tune(demo_config_path(), TINY, out, trials=3, pruner="none")

    # the teacher and every trial validated, and nothing was tested
    assert "val" in splits and "test" not in splits
    assert not list(out.rglob("results_test.json"))
    assert (out / "teacher" / "run.json").is_file()
    rows = trials_csv(out)
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3
    assert all(r["epochs"] == "3" for r in rows)
    assert (out / "search.png").stat().st_size > 0

    # the best trial is the lowest val error (error: lower is better), and best.yaml is it
    best = min(rows, key=lambda r: float(r["value"]))
    assert summary["best"]["number"] == int(best["number"])
    config = build_config(out / "best.yaml")
    assert config.method.alpha == pytest.approx(float(best["method.alpha"]), rel=1e-12)
    assert config.optim.lr == pytest.approx(float(best["optim.lr"]), rel=1e-12)
    assert config.method.teacher == str(out / "teacher")
    assert config.validation.every == 1 and config.out == str(out / "best")
    assert "trial " + best["number"] in (out / "best.yaml").read_text().splitlines()[0]

    # `mmanet train --config DIR/best.yaml` reproduces the trial: the same val values
    Trainer(config).fit()
    reproduced = read_run_record(out / "best")["validation"]["best"]
    assert reproduced == float(best["value"])
    assert (
        reproduced
        == read_run_record(out / "trials" / f"{int(best['number']):04d}")["validation"]["best"]
    )


def test_pruning_the_record_and_resuming_in_process(tmp_path, capsys):
    out = tmp_path / "tune"
    overrides = [*TINY, "optim.epochs=4"]
    tune(demo_config_path(), overrides, out, trials=3, method="sf_md", pruner=PruneAllButTheFirst())
    rows = trials_csv(out)
    assert [r["state"] for r in rows] == ["COMPLETE", "PRUNED", "PRUNED"]
    assert [r["epochs"] for r in rows] == ["4", "1", "1"]  # pruned at their first report
    assert set(rows[0]) >= {"optim.lr", "optim.weight_decay"}
    assert "method.alpha" not in rows[0]  # sf_md neither distils nor regularizes
    assert not (out / "teacher").exists()
    assert "trial 0 " in (out / "best.yaml").read_text()

    # what each trial reported is the selection value of its validations (the run's log)
    study = optuna.load_study(
        study_name=f"mmanet-tune-{out.name}", storage=f"sqlite:///{out}/study.db"
    )
    log = (out / "trials" / "0000" / "log.csv").read_text().splitlines()
    header, last = log[0].split(","), log[-1].split(",")
    assert study.trials[0].intermediate_values[4] == float(last[header.index("val/error")])

    # the same command with more trials continues the same study: one more trial
    stamp = (out / "trials" / "0000" / "run.json").stat().st_mtime_ns
    tune(demo_config_path(), overrides, out, trials=4, method="sf_md", pruner=PruneAllButTheFirst())
    assert [r["number"] for r in trials_csv(out)] == ["0", "1", "2", "3"]
    assert trials_csv(out)[0]["value"] == rows[0]["value"]
    assert (out / "trials" / "0000" / "run.json").stat().st_mtime_ns == stamp  # not retrained

    # another config into the same folder is an error naming the difference
    with pytest.raises(ConfigError, match=r"another config.*optim\.lr"):
        tune(demo_config_path(), [*overrides, "optim.lr=0.1"], out, trials=4, method="sf_md")
    capsys.readouterr()


def test_killed_mid_study_and_resumed(tmp_path):
    out = tmp_path / "tune"
    command = [sys.executable, "-m", "mmanet", "tune", "--config", str(demo_config_path())]
    command += ["--trials", "3", "--out", str(out), "--pruner", "none", *TINY, "optim.epochs=6"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(tmp_path / "first.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 120
        running = None
        while time.monotonic() < deadline and process.poll() is None:
            if (out / "trials.csv").is_file() and "COMPLETE" in (out / "trials.csv").read_text():
                with sqlite3.connect(out / "study.db", timeout=5) as db:
                    running = db.execute(
                        "SELECT t.number, count(p.param_id) FROM trials t JOIN trial_params p"
                        " ON p.trial_id = t.trial_id WHERE t.state = 'RUNNING' GROUP BY t.number"
                    ).fetchone()
                if running and running[1] == 5:  # killed during trial 1, its 5 parameters drawn
                    break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert running == (1, 5), (tmp_path / "first.log").read_text()
    first = trials_csv(out)[0]
    assert first["state"] == "COMPLETE"
    teacher = (out / "teacher" / "run.json").stat().st_mtime_ns

    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "trial 1 was running when tuning stopped: marked FAIL" in done.stdout
    assert "training the teacher" not in done.stdout  # the shared teacher was reused
    assert (out / "teacher" / "run.json").stat().st_mtime_ns == teacher
    rows = trials_csv(out)
    assert sum(r["state"] == "COMPLETE" for r in rows) == 3
    assert rows[0]["value"] == first["value"]  # the first trial, untouched
    assert rows[1]["state"] == "FAIL"
    retry = [r for r in rows if r["retry_of"] == "1"]
    assert len(retry) == 1 and retry[0]["optim.lr"] == rows[1]["optim.lr"]
    # the resumed sampler does not draw the first trials' parameters again
    fresh = [r for r in rows[2:] if not r["retry_of"]]
    assert fresh and all(
        r["optim.lr"] not in (rows[0]["optim.lr"], rows[1]["optim.lr"]) for r in fresh
    )


@pytest.mark.parametrize(
    ("space", "named"),
    [
        ("method.alph: {low: 1, high: 2}", "method.alph"),
        ("optim.lr: {low: 0.1, high: 0.01, log: true}", "optim.lr"),
        ("optim.lr: {low: 0.0, high: 0.1, log: true}", "optim.lr"),
        ("method.mar.warmup_epochs: {low: 1, high: 10}", "method.mar.warmup_epochs"),
        ("method.mar.warmup_epochs: {low: 1, high: 2.5}", "method.mar.warmup_epochs"),
        ("optim.optimizer: {choices: [sgd, rmsprop]}", "optim.optimizer"),
        ("optim.lr: {low: 0.1, hihg: 1}", "optim.lr"),
        ("optim.lr: 0.1", "optim.lr"),
    ],
)
def test_a_bad_space_is_one_line_naming_the_key(tmp_path, capsys, space, named):
    file = tmp_path / "space.yaml"
    file.write_text(space + "\n")
    args = ["tune", "--config", str(demo_config_path()), "--space", str(file)]
    assert main([*args, "--out", str(tmp_path / "t"), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmanet: error: ") and "\n" not in err and named in err
    assert not (tmp_path / "t" / "study.db").exists()  # found before anything was written


def test_the_default_space_follows_the_method_switches():
    def space(method: str) -> dict:
        return default_space(build_config(demo_config_path(), [*TINY, f"method.name={method}"]))

    assert set(space("sf_md")) == {"optim.lr", "optim.weight_decay"}
    assert set(space("sf_mad")) == {"method.alpha", "optim.lr", "optim.weight_decay"}
    full = space("mmanet")
    assert set(full) == {
        "method.alpha",
        "method.beta",
        "method.mar.warmup_epochs",
        "optim.lr",
        "optim.weight_decay",
    }
    alpha = full["method.alpha"]  # around the demo's α = 3, on a log scale
    assert (alpha.low, alpha.high, alpha.log) == (pytest.approx(0.3), pytest.approx(30.0), True)
    assert (full["optim.lr"].low, full["optim.lr"].high) == (pytest.approx(0.005), 0.5)
    warmup = full["method.mar.warmup_epochs"]
    assert (warmup.kind, warmup.low, warmup.high) == ("int", 1, 2)  # min(10, epochs - 1)


def _retrained_value(out: Path, number: int) -> float:
    """The val selection value of trial ``number`` trained again here, from its config."""
    config = build_config(out / "trials" / f"{number:04d}" / "config.yaml")
    config.out = str(out / "again" / f"{number:04d}")
    trainer = Trainer(config)
    trainer.fit(test=False)
    return trainer.validation.best


def _side_by_side_checks(out: Path, printed: str, jobs: int) -> None:
    """A study run by ``jobs`` workers: trials that overlapped in time, enough finished
    ones, each printed once by the driver, the teacher shared, and the best trial's value
    what training its config again sequentially here gives."""
    study = optuna.load_study(
        study_name=f"mmanet-tune-{out.name}", storage=f"sqlite:///{out}/study.db"
    )
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert 3 <= len(complete) <= 3 + jobs - 1  # one too many only in a race
    assert complete[1].datetime_start < complete[0].datetime_complete  # side by side
    assert all(t.user_attrs["epochs"] == 3 for t in complete)
    for trial in study.trials:
        assert printed.count(f"trial {trial.number} complete") == 1, printed
    assert printed.count("training the teacher") == 1
    assert len({t.params["optim.lr"] for t in complete}) == len(complete)  # drawn apart
    assert [r["number"] for r in trials_csv(out)] == [str(t.number) for t in study.trials]
    best = study.best_trial
    assert _retrained_value(out, best.number) == best.value
    assert build_config(out / "best.yaml").optim.lr == best.params["optim.lr"]


def test_trials_side_by_side_in_processes_through_the_cli(tmp_path, capsys):
    out = tmp_path / "tune"
    args = ["tune", "--config", str(demo_config_path()), "--trials", "3", "--out", str(out)]
    assert main([*args, "--jobs", "2", "--pruner", "none", *TINY]) == 0
    _side_by_side_checks(out, capsys.readouterr().out, jobs=2)


def test_a_worker_counts_the_trials_running_elsewhere(tmp_path, capsys):
    out = tmp_path / "tune"
    tune(demo_config_path(), TINY, out, trials=1, pruner="none")
    storage = f"sqlite:///{out}/study.db"
    elsewhere = optuna.load_study(study_name=f"mmanet-tune-{out.name}", storage=storage).ask()
    # a second worker of the study (an RDB URL: it does not own the folder): 1 + 1 running
    # + the one it trains make 3
    tune(demo_config_path(), TINY, out, trials=3, pruner="none", storage=storage)
    states = [r["state"] for r in trials_csv(out)]
    assert states.count("COMPLETE") == 2 and states[elsewhere.number] == "RUNNING"
    capsys.readouterr()


@pytest.mark.skipif(find_spec("ray") is None, reason="Ray is not installed")
def test_trials_side_by_side_on_a_local_ray(tmp_path, capsys):
    import ray

    out = tmp_path / "tune"
    summary = tune(demo_config_path(), TINY, out, trials=3, pruner="none", jobs=2, backend="ray")
    assert not ray.is_initialized()  # the Ray started for the study was shut down
    _side_by_side_checks(out, capsys.readouterr().out, jobs=2)
    assert summary["best"]["value"] == min(r["value"] for r in summary["trials"] if r["value"])


def test_a_cluster_needs_a_shared_storage(tmp_path):
    with pytest.raises(ConfigError, match=r"--address.*RDB --storage"):
        tune(demo_config_path(), TINY, tmp_path / "t", backend="ray", address="10.0.0.1:6379")
    assert not (tmp_path / "t").exists()


def test_workers_and_resumptions_never_share_a_sampler_seed(tmp_path):
    """Worker 0 opening after one trial started and worker 1 opening before any did: the
    sum of the parts would give both the same seed (a Ray run drew one lr twice)."""
    from mmanet.tune.storage import sampler_seed, study_name

    class Held:  # a storage holding ``trials`` trials of the folder's study
        def __init__(self, trials: int) -> None:
            self.trials = trials

        def get_study_id_from_name(self, name: str) -> int:
            assert name == study_name(tmp_path)
            return 7

        def get_all_trials(self, study_id: int, deepcopy: bool) -> list:
            return [None] * self.trials

    seeds = {
        (started, worker): sampler_seed(0, Held(started), tmp_path, None, worker)
        for started in range(4)
        for worker in range(4)
    }
    assert len(set(seeds.values())) == len(seeds)
    assert sampler_seed(0, Held(2), tmp_path, None, 1) == seeds[2, 1]  # reproducible
