"""Train and evaluate a list of methods over seeds, reusing finished runs, and tabulate.

Layout under ``out``: ``seed-<s>/<method>/`` per run (the teacher first, since the
students distil from it), then ``results.json`` and ``results.md`` for the comparison.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import multiprocessing
import os
import pickle
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

import mmanet
from mmanet.config import Config, build_config, deep_merge, to_dict
from mmanet.data import DataBundle, build_data
from mmanet.engine import Trainer
from mmanet.engine.checkpoint import latest_checkpoint
from mmanet.engine.rundir import RUNTIME_KEYS, changed_keys, saved_config
from mmanet.errors import ConfigError
from mmanet.io import atomic_write_json, atomic_write_text
from mmanet.methods import TABLES, get_method, method_titles, methods_in
from mmanet.metrics import summarize
from mmanet.modality import Modalities
from mmanet.models import baseline_title
from mmanet.plugins import import_user_modules
from mmanet.provenance import code_version
from mmanet.registry import METHODS, TASKS
from mmanet.report import LOWER_IS_BETTER, aggregate, comparison_table
from mmanet.tasks import build_task

# The tables a comparison writes, each when all of its methods were run.
WRITTEN_TABLES = ("comparison", "distillation", "regularization")


def resolve_methods(spec: str) -> list[str]:
    """``"all"`` (every method of the paper's tables), a table of
    :data:`mmanet.methods.TABLES`, or comma-separated method names."""
    if spec == "all":
        return list(dict.fromkeys(methods_in("comparison") + methods_in("ablation")))
    if spec in TABLES:
        return methods_in(spec)
    methods = [m.strip() for m in spec.split(",") if m.strip()]
    for method in methods:
        if method not in METHODS or method == "teacher":
            known = [name for name in METHODS if name != "teacher"]
            raise ConfigError(
                f"unknown method {method!r} in --methods; use all, one of "
                f"{', '.join(TABLES)}, or names from {', '.join(known)}"
            )
    if not methods:
        raise ConfigError("--methods names no method")
    return list(dict.fromkeys(methods))


def run_method(
    method: str,
    seed: int,
    out: Path,
    config_path: str | Path | None,
    overrides: Mapping[str, Any],
    data: DataBundle,
    teacher_dir: Path | None,
    split: str = "test",
    progress: bool = True,
    combination: str | None = None,
) -> dict[str, Any]:
    """Train one method (or reuse the finished run) and return its report on ``split``."""
    run_dir = out / f"seed-{seed}" / method
    layer: dict[str, Any] = {"seed": seed, "out": str(run_dir), "method": {"name": method}}
    if combination is not None:
        run_dir = run_dir / combination
        layer["out"] = str(run_dir)
        layer["method"]["combination"] = combination
    if teacher_dir is not None:
        layer["method"]["teacher"] = str(teacher_dir)
    config = build_config(config_path, deep_merge(dict(overrides), layer))
    config.progress = progress and config.progress
    report_path = run_dir / f"results_{split}.json"
    if (run_dir / "config.yaml").is_file():
        changed = changed_keys(saved_config(run_dir), config, RUNTIME_KEYS)
        if changed:
            raise ConfigError(
                f"{run_dir} holds a run with another config ({'; '.join(changed)}); "
                "choose another --out or remove it"
            )
        if report_path.is_file():
            return json.loads(report_path.read_text())
    trainer = Trainer(config, data)
    resume = latest_checkpoint(run_dir) is not None  # an interrupted run of this comparison
    report = trainer.fit(resume=resume, overwrite=not resume)
    if report is None or split != "test":
        report = trainer.test(split)
    return report


def run_customized(
    seed: int,
    out: Path,
    config_path: str | Path | None,
    overrides: Mapping[str, Any],
    data: DataBundle,
    split: str = "test",
    progress: bool = True,
    method: str = "customized",
) -> dict[str, Any]:
    """A per-combination method (the customized baseline): one model per combination,
    each tested on its own one."""
    names = Modalities(data.modalities)
    per_combination, per_model = {}, []
    for mask in names.combinations:
        name = names.mask_name(mask)
        report = run_method(
            method, seed, out, config_path, overrides, data, None, split, progress, name
        )
        per_combination[name] = report["combinations"][name]
        per_model.append(report)
    versions = {str(r.get("code_version")) for r in per_model}
    return {
        "method": method,
        "split": split,
        "code_version": ", ".join(sorted(versions)),
        "combinations": per_combination,
        **summarize(per_combination),
        "metrics": per_model[0]["metrics"],
    }


def compare(
    methods: Sequence[str],
    seeds: Sequence[int],
    out: str | Path,
    config_path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    split: str = "test",
    metric: str | None = None,
    progress: bool = True,
    figures: bool = False,
    jobs: int = 1,
) -> dict[str, Any]:
    """Train the teacher (when a method distils) and every method for every seed, reusing
    finished runs; write ``results.json`` and ``results.md`` (and the figures) in ``out``.

    ``metric`` defaults to the task's: error (classification), ACER (anti-spoofing) or
    mIoU (segmentation). Each column records the config and code version it came from.
    ``jobs > 1`` trains that many runs at a time in separate processes (set ``threads``
    so that jobs × threads does not exceed the cores).
    """
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    code_version()  # fixed now, when the code was imported, not after later edits
    out = Path(out)
    overrides = dict(overrides or {})
    base = build_config(config_path, overrides)
    data = build_data(base.data)
    if metric is None:
        metric = build_task(data, base).default_metric
    configs = {
        m: build_config(config_path, deep_merge(overrides, {"method": {"name": m}}))
        for m in methods
    }
    distils = any(c.method.distill != "none" for c in configs.values())
    needs_teacher = "teacher" in methods or distils
    if jobs > 1:  # train in parallel processes; the loop below then reads the results
        shared = (out, config_path, overrides, data, split)
        names = Modalities(data.modalities)
        combinations = [names.mask_name(mask) for mask in names.combinations]
        runs = [
            (method, seed, combination)
            for seed in seeds
            for method in methods
            if method != "teacher"
            for combination in (combinations if get_method(method).per_combination else [None])
        ]
        # The teachers first, beside the runs that do not distil; then the ones that do.
        distilling = [run for run in runs if configs[run[0]].method.distill != "none"]
        first = [("teacher", seed, None) for seed in seeds] if needs_teacher else []
        first += [run for run in runs if run not in distilling]
        run_in_processes([first, distilling], shared, jobs, progress, base.imports)
    reports: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for seed in seeds:
        teacher_dir = out / f"seed-{seed}" / "teacher"
        if needs_teacher:
            teacher_report = run_method(
                "teacher", seed, out, config_path, overrides, data, None, split, progress
            )
            reports.setdefault("teacher", []).append(teacher_report)
        for method in methods:
            if method == "teacher":
                continue
            if get_method(method).per_combination:
                report = run_customized(
                    seed, out, config_path, overrides, data, split, progress, method
                )
            else:
                report = run_method(
                    method, seed, out, config_path, overrides, data, teacher_dir, split, progress
                )
            reports[method].append(report)
    students = [m for m in methods if m != "teacher"]
    summary = {
        "metric": metric,
        "split": split,
        "seeds": list(seeds),
        "code_version": code_version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": to_dict(base),
        "titles": method_titles(baseline_title(base.model)),
        "teacher": aggregate(reports["teacher"]) if "teacher" in reports else None,
        "methods": {m: aggregate(reports[m]) for m in students},
        "columns": {m: column_record(configs[m], reports[m], seeds, out) for m in students},
    }
    if figures:
        from mmanet.figures import write_figures

        summary["figures"] = write_figures(summary, out, data)
    atomic_write_json(out / "results.json", summary)
    write_tables(summary, out / "results.md")
    return summary


_worker: dict[str, Any] = {}


def _init_worker(imports: list[str], shared: bytes) -> None:
    import threading

    # The workers draw no bars. tqdm's default lock holds a named semaphore that a spawned
    # process registers with the parent's resource tracker: a thread lock needs none.
    tqdm.set_lock(threading.RLock())
    # Nor do they print: runs side by side would interleave their start-up summaries and
    # epoch lines under the parent's bar; each run's log is in its folder (log.jsonl).
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- for the worker's lifetime
    try:
        import_user_modules(imports)  # before the data are unpickled: they may be of their types
        _worker["shared"] = pickle.loads(shared)
    except (
        Exception
    ) as err:  # raised by the jobs: a pool would restart a failed initializer forever
        _worker["error"] = err
    code_version()  # as imported


def _run_job(job: tuple[str, int, str | None]) -> str:
    if "error" in _worker:
        raise _worker["error"]
    out, config_path, overrides, data, split = _worker["shared"]
    method, seed, combination = job
    own = method == "teacher" or get_method(method).per_combination  # no teacher to read
    teacher_dir = None if own else out / f"seed-{seed}" / "teacher"
    run_method(
        method, seed, out, config_path, overrides, data, teacher_dir, split, False, combination
    )
    return f"{method}{f' ({combination})' if combination else ''}, seed {seed}"


def run_in_processes(
    phases: Sequence[Sequence[tuple]],
    shared: tuple,
    jobs: int,
    progress: bool = True,
    imports: Sequence[str] = (),
) -> None:
    """Run the jobs of each phase in a pool of ``jobs`` spawned processes, phase after phase
    (the teachers before the students that distil from them), with a bar over the runs."""
    context = multiprocessing.get_context("spawn")  # no fork of a process holding threads
    bar = tqdm(
        total=sum(len(phase) for phase in phases),
        desc=f"runs, {jobs} at a time",
        unit="run",
        disable=not progress,
        dynamic_ncols=True,
    )
    initargs = (list(imports), pickle.dumps(shared))
    pool = context.Pool(jobs, initializer=_init_worker, initargs=initargs)
    try:
        with bar:
            for phase in phases:
                for finished in pool.imap_unordered(_run_job, phase):
                    bar.set_postfix_str(f"finished {finished}", refresh=False)
                    bar.update()
        pool.close()  # the workers finish and exit by themselves, running their exit handlers
    except BaseException:
        pool.terminate()  # a failed run or an interrupt: stop the others
        raise
    finally:
        pool.join()  # no worker outlives the comparison (nor is killed as the parent exits)


def column_record(
    config: Config, reports: Sequence[Mapping[str, Any]], seeds: Sequence[int], out: Path
) -> dict[str, Any]:
    """Where a table column came from: its config (digest and full), code version(s), runs."""
    settings = to_dict(config)
    for key in ("seed", "out", *(k for k in RUNTIME_KEYS if "." not in k)):
        settings.pop(key, None)
    settings["method"].pop("teacher", None)
    encoded = json.dumps(settings, sort_keys=True).encode()
    name = config.method.name
    return {
        "config_digest": hashlib.sha256(encoded).hexdigest()[:12],
        "config": settings,
        "code_versions": sorted({str(r.get("code_version", "unknown")) for r in reports}),
        "runs": [str(out / f"seed-{seed}" / name) for seed in seeds],
    }


def write_tables(summary: Mapping[str, Any], path: Path) -> str:
    """The paper's tables in markdown: one per group of :data:`TABLES` that was run (rows =
    combinations + averages, columns = methods, best per row in bold, mean ± std over
    seeds), every method together, and where each column came from."""
    metric, methods = summary["metric"], summary["methods"]
    titles = summary.get("titles") or method_titles()
    seeds = summary["seeds"]
    sections = [
        f"# Comparison ({metric} in %, {summary['split']} split, "
        f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}; "
        f"{'lower' if metric in LOWER_IS_BETTER else 'higher'} is better)"
    ]
    for table in WRITTEN_TABLES:
        title, group = TABLES[table], methods_in(table)
        present = [m for m in group if m in methods]
        if len(present) == len(group) and len(present) < len(methods):
            table = comparison_table({m: methods[m] for m in present}, metric, titles=titles)
            sections.append(f"## {title}\n\n{table}")
    sections.append(f"## Every method\n\n{comparison_table(methods, metric, titles=titles)}")
    combinations = next(iter(methods.values()))
    if len(combinations) > 16:
        full = comparison_table(methods, metric, max_rows=10**6, titles=titles)
        sections.append(f"## Every combination\n\n{full}")
    columns = summary.get("columns")
    if columns:
        rows = ["| Column | Config digest | Code version | Runs |", "|---|---|---|---|"]
        for m, record in columns.items():
            runs = ", ".join(f"`{run}`" for run in record["runs"])
            versions = ", ".join(record["code_versions"])
            rows.append(f"| {titles.get(m, m)} | {record['config_digest']} | {versions} | {runs} |")
        sections.append(
            "## Provenance\n\nThe full config of each column is in `results.json` "
            "(`columns.<method>.config`).\n\n" + "\n".join(rows)
        )
    figures = summary.get("figures")
    if figures:
        sections.append("## Figures\n\n" + "\n".join(f"![{f}]({f})" for f in figures))
    text = "\n\n".join(sections) + "\n"
    atomic_write_text(path, text)
    return text


def demo_config_path(task: str = "classification") -> Path:
    """The bundled demo config of a task (Multiple Features for classification, the
    rendered RGB-D scenes for segmentation)."""
    config = TASKS.get(task).demo_config
    if config is None:
        raise ConfigError(f"the task {task!r} has no bundled demo")
    return Path(mmanet.__file__).parent / "configs" / config
