"""Train and evaluate a list of methods over seeds, reusing finished runs, and tabulate.

Layout under ``out``: ``seed-<s>/<method>/`` per run (the teacher first, since the
students distil from it), then ``results.json`` and ``results.md`` for the comparison.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mmanet
from mmanet.config import Config, build_config, deep_merge, to_dict
from mmanet.data import DataBundle, build_data
from mmanet.engine import Trainer
from mmanet.engine.checkpoint import latest_checkpoint
from mmanet.engine.rundir import RUNTIME_KEYS, as_recorded, refuse_another_config
from mmanet.errors import ConfigError
from mmanet.io import atomic_write_json, atomic_write_text
from mmanet.methods import TABLES, get_method, method_titles, methods_in
from mmanet.metrics import summarize
from mmanet.modality import Modalities
from mmanet.models import baseline_title
from mmanet.provenance import code_version
from mmanet.registry import METHODS, TASKS
from mmanet.report import aggregate, comparison_table
from mmanet.scheduler import Backend, run_phases
from mmanet.tasks import build_task
from mmanet.verdicts import verdict_section, verdicts

# The tables a comparison writes, each when all of its methods were run.
WRITTEN_TABLES = ("comparison", "distillation", "regularization", "later")


def resolve_methods(spec: str) -> list[str]:
    """``"all"`` (every method of the tables, the later methods too), a table of
    :data:`mmanet.methods.TABLES`, or comma-separated method names. A method of the user's
    is known once the config's ``imports`` are loaded (:func:`mmanet.config.build_config`):
    resolve the names after building the config."""
    if spec == "all":
        tables = ("comparison", "ablation", "later")
        return list(dict.fromkeys(name for table in tables for name in methods_in(table)))
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
    refuse_another_config(run_dir, config)
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
    baseline: str | None = None,
    backend: str = "process",
    address: str | None = None,
    gpus_per_run: float = 0.0,
    failure_rates: Mapping[str, float] | None = None,
    corruptions: Sequence[str] | None = None,
    corrupt_seed: int = 0,
) -> dict[str, Any]:
    """Train the teacher (when a method distils) and every method for every seed, reusing
    finished runs; write ``results.json`` and ``results.md`` (and the figures) in ``out``.

    ``metric`` defaults to the task's: error (classification), ACER (anti-spoofing) or
    mIoU (segmentation); which way it is better is the task's declaration
    (``results.json``'s ``lower_is_better``). Each column records the config and code
    version it came from.
    ``jobs > 1`` trains that many runs at a time in separate processes (set ``threads``
    so that jobs × threads does not exceed the cores); ``backend="ray"`` on Ray instead,
    a local Ray or the cluster at ``address``, each run reserving ``gpus_per_run`` GPUs
    (see :mod:`mmanet.scheduler`). With two or more seeds every method
    is judged against ``baseline`` (default: SF-MD when run, else the first method), see
    :mod:`mmanet.verdicts`. Each method's expected metric when sensors fail
    independently (:func:`mmanet.robustness.comparison_under_failure`: shared rates, and
    ``failure_rates`` per modality when given) is recorded as ``under_failure``. With
    ``corruptions`` (``--corrupt`` specs) every run is also evaluated under them and each
    method's corruption errors against the baseline are recorded as ``corruptions``
    (:mod:`mmanet.corruption_compare`).
    """
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    code_version()  # fixed now, when the code was imported, not after later edits
    out = Path(out)
    if baseline is not None and baseline not in [m for m in methods if m != "teacher"]:
        raise ConfigError(f"--baseline {baseline!r} is not among the methods compared")
    overrides = dict(overrides or {})
    base = build_config(config_path, overrides)
    scheduler = Backend(backend, jobs, address, gpus_per_run, cpus_per_run=max(base.threads, 1))
    scheduler.check_device(base.device)
    data = build_data(base.data)
    if failure_rates is not None:  # checked before anything trains
        _under_failure({}, data.modalities, "", failure_rates)
    if corruptions:
        from mmanet.corruption_eval import corruption_targets

        corruption_targets(data, corruptions)  # a bad spec: one line, before any training
    task = build_task(data, base)
    metric = metric or task.default_metric
    lower_is_better = task.lower_is_better(metric)
    configs = {
        m: build_config(config_path, deep_merge(overrides, {"method": {"name": m}}))
        for m in methods
    }
    # the runs that read a teacher (a distillation loss, or a loss term that needs one)
    readers = frozenset(m for m, c in configs.items() if c.method.uses_teacher)
    needs_teacher = "teacher" in methods or bool(readers)
    if not scheduler.sequential:  # train side by side; the loop below then reads the results
        names = Modalities(data.modalities)
        combinations = [names.mask_name(mask) for mask in names.combinations]
        phases = compare_phases(methods, seeds, configs, combinations, needs_teacher)
        shared = (out, config_path, overrides, data, split, readers)
        run_phases(
            compare_job, phases, shared, scheduler, base.imports, progress, compare_job_label
        )
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
                reads = teacher_dir if method in readers else None
                report = run_method(
                    method, seed, out, config_path, overrides, data, reads, split, progress
                )
            reports[method].append(report)
    students = [m for m in methods if m != "teacher"]
    summary = {
        "metric": metric,
        "lower_is_better": lower_is_better,
        "secondary_metrics": dict(task.secondary_metrics),
        "split": split,
        "seeds": list(seeds),
        "code_version": code_version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": to_dict(as_recorded(base)),
        "titles": method_titles(baseline_title(base.model)),
        "teacher": aggregate(reports["teacher"]) if "teacher" in reports else None,
        "methods": {m: aggregate(reports[m]) for m in students},
        "columns": {m: column_record(configs[m], reports[m], seeds, out) for m in students},
    }
    if students:
        summary["under_failure"] = _under_failure(
            summary["methods"], data.modalities, metric, failure_rates
        )
    summary["verdicts"] = (
        verdicts(summary["methods"], metric, baseline, lower_is_better=lower_is_better)
        if students
        else None
    )
    if corruptions and students:
        summary["corruptions"] = _corruptions(
            students, seeds, out, data, corruptions, split, corrupt_seed, baseline, progress
        )
    if figures:
        from mmanet.figures import write_figures

        summary["figures"] = write_figures(summary, out, data)
    atomic_write_json(out / "results.json", summary)
    write_tables(summary, out / "results.md")
    return summary


def _under_failure(
    methods: Mapping[str, Any],
    modalities: Sequence[str],
    metric: str,
    failure_rates: Mapping[str, float] | None,
) -> dict[str, Any]:
    """:func:`mmanet.robustness.comparison_under_failure`, bad rates as one ConfigError."""
    from mmanet.robustness import comparison_under_failure

    try:
        return comparison_under_failure(methods, modalities, metric, failure_rates)
    except ValueError as err:
        raise ConfigError(f"--failure-rates: {err}") from None


def _corruptions(
    methods: Sequence[str],
    seeds: Sequence[int],
    out: Path,
    data: DataBundle,
    specs: Sequence[str],
    split: str,
    seed: int,
    baseline: str | None,
    progress: bool,
) -> dict[str, Any]:
    """Every run of the methods with one network evaluated under ``specs``, summarised
    against the baseline (:mod:`mmanet.corruption_compare`)."""
    from mmanet.corruption_compare import run_section, summarize_corruptions
    from mmanet.verdicts import default_baseline

    single = [m for m in methods if not get_method(m).per_combination]
    if not single:
        raise ConfigError("--corrupt: no compared method has a single network to corrupt")
    reference = baseline if baseline in single else default_baseline(single)
    sections = {
        m: [run_section(out / f"seed-{s}" / m, data, specs, split, seed, progress) for s in seeds]
        for m in single
    }
    summary = summarize_corruptions(sections, reference)
    summary["left_out"] = [m for m in methods if m not in single]  # one model per combination
    return summary


CompareJob = tuple[str, int, str | None]  # method, seed, combination (per-combination methods)


def compare_phases(
    methods: Sequence[str],
    seeds: Sequence[int],
    configs: Mapping[str, Config],
    combinations: Sequence[str],
    needs_teacher: bool,
) -> list[list[CompareJob]]:
    """A comparison's runs in two phases: the teachers, beside the runs that do not distil;
    then the runs that distil (from the teacher of their seed)."""
    runs = [
        (method, seed, combination)
        for seed in seeds
        for method in methods
        if method != "teacher"
        for combination in (combinations if get_method(method).per_combination else [None])
    ]
    distilling = [run for run in runs if configs[run[0]].method.uses_teacher]
    first = [("teacher", seed, None) for seed in seeds] if needs_teacher else []
    first += [run for run in runs if run not in distilling]
    return [first, distilling]


def compare_job(shared: tuple, job: CompareJob) -> None:
    """Train one run of a comparison (a :func:`mmanet.scheduler.run_phases` job) silently;
    ``shared`` is ``(out, config_path, overrides, data, split, the methods that read a
    teacher)``."""
    code_version()  # as this worker imported the code
    out, config_path, overrides, data, split, readers = shared
    method, seed, combination = job
    teacher_dir = out / f"seed-{seed}" / "teacher" if method in readers else None
    run_method(
        method, seed, out, config_path, overrides, data, teacher_dir, split, False, combination
    )


def compare_job_label(job: CompareJob) -> str:
    """``"sf_mad, seed 1"``, ``"customized (fou+kar), seed 0"``: a run on the bar."""
    method, seed, combination = job
    return f"{method}{f' ({combination})' if combination else ''}, seed {seed}"


def column_record(
    config: Config, reports: Sequence[Mapping[str, Any]], seeds: Sequence[int], out: Path
) -> dict[str, Any]:
    """Where a table column came from: its config (digest and full), code version(s), runs."""
    settings = to_dict(as_recorded(config))
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
    lower = summary["lower_is_better"]
    titles = summary.get("titles") or method_titles()
    seeds = summary["seeds"]
    sections = [
        f"# Comparison ({metric} in %, {summary['split']} split, "
        f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}; "
        f"{'lower' if lower else 'higher'} is better)"
    ]
    for table in WRITTEN_TABLES:
        title, group = TABLES[table], methods_in(table)
        present = [m for m in group if m in methods]
        if len(present) == len(group) and len(present) < len(methods):
            present_methods = {m: methods[m] for m in present}
            table = comparison_table(present_methods, metric, titles=titles, lower_is_better=lower)
            sections.append(f"## {title}\n\n{table}")
    every = comparison_table(methods, metric, titles=titles, lower_is_better=lower)
    sections.append(f"## Every method\n\n{every}")
    judged = summary.get("verdicts")
    if judged:
        baseline = titles.get(judged["baseline"], judged["baseline"])
        sections.append(f"## Verdicts against {baseline}\n\n{verdict_section(judged, titles)}")
    for name, direction in (summary.get("secondary_metrics") or {}).items():
        if any(name in row for results in methods.values() for row in results.values()):
            # a combination that does not define the number (e.g. no sub-combination to
            # remove a modality to) reads n/a
            filled = {
                m: {
                    combination: {name: row.get(name) or _undefined(len(summary["seeds"]))}
                    for combination, row in results.items()
                }
                for m, results in methods.items()
            }
            table = comparison_table(
                filled, name, titles=titles, lower_is_better=direction == "min"
            )
            better = "lower" if direction == "min" else "higher"
            sections.append(f"## {name} (%, {better} is better)\n\n{table}")
    under_failure = summary.get("under_failure")
    if under_failure:
        from mmanet.report import failure_table

        table = failure_table(under_failure, titles, lower_is_better=lower)
        sections.append(
            f"## Under sensor failure\n\nExpected {metric} (%) given a decision when each "
            "sensor fails independently (docs/evaluation.md); the last column is how often "
            f"every sensor fails at once.\n\n{table}"
        )
    corrupted = summary.get("corruptions")
    if corrupted:
        from mmanet.corruption_compare import tables_section

        sections.append(tables_section(corrupted, titles))
    combinations = next(iter(methods.values()))
    if len(combinations) > 16:
        full = comparison_table(
            methods, metric, max_rows=10**6, titles=titles, lower_is_better=lower
        )
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


def _undefined(seeds: int) -> dict[str, Any]:
    """A number a combination does not define, for each of ``seeds`` seeds."""
    nan = float("nan")
    return {"mean": nan, "std": nan, "values": [nan] * seeds}


def demo_config_path(task: str = "classification") -> Path:
    """The bundled demo config of a task (Multiple Features for classification, the
    rendered RGB-D scenes for segmentation)."""
    config = TASKS.get(task).demo_config
    if config is None:
        raise ConfigError(f"the task {task!r} has no bundled demo")
    return Path(mmanet.__file__).parent / "configs" / config
