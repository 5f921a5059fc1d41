"""What a study writes in its folder: ``trials.csv``, ``best.yaml``, ``search.png``, and
the summary it prints."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mmanet.config import to_dict
from mmanet.io import atomic_write, atomic_write_text
from mmanet.tune.storage import _retry_callback, finished_count

if TYPE_CHECKING:
    from mmanet.tune.search import Study


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trial_line(trial: Any, key: str) -> str:
    """The line printed as ``trial`` ends: its state, value (or why it failed), epochs
    and parameters."""
    value = "" if trial.value is None else f" {key} {trial.value:.4g}"
    if "fail_reason" in trial.user_attrs:
        value = f" ({trial.user_attrs['fail_reason']})"
    epochs = trial.user_attrs.get("epochs", 0)
    params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    return f"trial {trial.number} {trial.state.name.lower()}{value} ({epochs} epochs): {params}"


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

    from mmanet.report import render_table

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
        print(render_table(header, rows, markdown=False))
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
    finished = finished_count(study)
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
