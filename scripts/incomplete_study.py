"""Training on incomplete data: how MMANet and SF-MD fare when a share of the training
samples lacks modalities (missing completely at random), trained on every sample (each
with what it has; MMANet's teacher on the complete ones) or on the complete ones only.

For each bundled demo (Multiple Features; the rendered RGB-D scenes), each share of
incomplete training samples and each seed (which also seeds the missing pattern), the
teacher is trained once on the complete samples; then SF-MD and MMANet are trained on
every sample, and both again on the complete samples only. Every network is evaluated on
the full (complete) test split, every modality combination. Finished runs are reused.

Usage: python scripts/incomplete_study.py [--out runs/incomplete] [--seeds 3] [--jobs 2]
           [--fractions 0 0.3 0.6] [--tasks classification segmentation] [--docs docs/results]
           [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
from pathlib import Path
from typing import Any

VARIANTS = {"all": {}, "complete": {"method": {"samples": "complete"}}}
METHODS = ("sf_md", "mmanet")
TITLES = {
    ("sf_md", "all"): "SF-MD, every sample",
    ("mmanet", "all"): "MMANet, every sample",
    ("sf_md", "complete"): "SF-MD, complete samples",
    ("mmanet", "complete"): "MMANet, complete samples",
}


def overrides(fraction: float, seed: int) -> dict[str, Any]:
    from mmanet.config import deep_merge, parse_overrides

    study = {
        # the pool's workers are daemons: their loaders read in-process (a runtime setting)
        "data": {"missing_fraction": fraction, "missing_seed": seed, "num_workers": 0},
        "progress": False,
        "tensorboard": False,
    }
    return deep_merge(parse_overrides(ARGS["overrides"]), study)


def run(job: tuple[str, float, int, str | None, str]) -> dict[str, Any]:
    """Train (or reuse) one run and return its test report."""
    from mmanet.config import build_config, deep_merge
    from mmanet.data import build_data
    from mmanet.experiment import demo_config_path, run_method

    task, fraction, seed, variant, method = job
    root = Path(ARGS["out"]) / task / f"missing-{fraction:g}"
    settings = overrides(fraction, seed)
    config_path = demo_config_path(task)
    data = build_data(build_config(config_path, settings).data)
    if method == "teacher":
        return run_method("teacher", seed, root, config_path, settings, data, None, "test", False)
    teacher = root / f"seed-{seed}" / "teacher"
    settings = deep_merge(settings, VARIANTS[variant])
    return run_method(method, seed, root / variant, config_path, settings, data, teacher)


ARGS: dict[str, Any] = {}


def init(out: str, extra: list[str]) -> None:
    ARGS["out"], ARGS["overrides"] = out, extra


def groups(report: dict[str, Any], metric: str) -> dict[str, float]:
    """The average over every combination, then each combination when there are at most
    seven (RGB-D: three), else the average over the combinations of each size (Multiple
    Features: 1 to 6 of its 6 views)."""
    from mmanet.engine.evaluate import AS_AVAILABLE

    combinations = {n: v[metric] for n, v in report["combinations"].items() if n != AS_AVAILABLE}
    if len(combinations) <= 7:
        return {"average": report["average"][metric], **combinations}
    sizes: dict[str, list[float]] = {}
    views = max(name.count("+") + 1 for name in combinations)
    for name, value in combinations.items():
        sizes.setdefault(f"{name.count('+') + 1} of {views}", []).append(value)
    return {
        "average": report["average"][metric],
        **{k: statistics.fmean(v) for k, v in sorted(sizes.items()) if v},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/incomplete")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.3, 0.6])
    parser.add_argument("--tasks", nargs="+", default=["classification", "segmentation"])
    parser.add_argument("--docs", default="docs/results", help="where the table and plot go")
    parser.add_argument("overrides", nargs="*", help="key=value for every run (a smoke test)")
    args = parser.parse_args()
    seeds = range(args.seeds)
    grid = [(t, f, s) for t in args.tasks for f in args.fractions for s in seeds]
    teachers = [(t, f, s, None, "teacher") for t, f, s in grid]
    # with no incomplete sample, "complete samples only" is the same run as "every sample"
    students = [
        (t, f, s, v, m) for t, f, s in grid for v in VARIANTS for m in METHODS if f or v == "all"
    ]
    init(args.out, args.overrides)
    from mmanet.config import build_config
    from mmanet.data import build_data
    from mmanet.experiment import demo_config_path

    for task in args.tasks:  # generated data (the rendered scenes) are made here, once
        build_data(build_config(demo_config_path(task), overrides(0.0, 0)).data)
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.jobs, initializer=init, initargs=(args.out, args.overrides)) as pool:
        for done, _ in enumerate(pool.imap_unordered(run, teachers), start=1):
            print(f"teachers: {done}/{len(teachers)}", flush=True)
        reports = {}
        for done, (job, report) in enumerate(
            zip(students, pool.imap(run, students), strict=True), start=1
        ):
            reports[job] = report
            print(f"students: {done}/{len(students)}", flush=True)
        pool.close()
        pool.join()
    for (t, f, s, _v, m), report in list(reports.items()):
        if not f:
            reports[t, f, s, "complete", m] = report
    write(reports, args)


def write(reports: dict[tuple, dict[str, Any]], args: argparse.Namespace) -> None:
    """``incomplete.json``, ``incomplete.md`` (the table) and ``incomplete.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmanet.io import atomic_write, atomic_write_json, atomic_write_text

    docs = Path(args.docs)
    summary: dict[str, Any] = {}
    for (task, fraction, _seed, variant, method), report in reports.items():
        metric = "miou" if task == "segmentation" else "error"
        cell = summary.setdefault(task, {"metric": metric, "rows": {}})
        key = f"{TITLES[method, variant]}|{fraction:g}"
        cell["rows"].setdefault(key, []).append(groups(report, metric))
    atomic_write_json(docs / "incomplete.json", summary)
    lines = [
        "# Training on incomplete data",
        "",
        "Share of the *training* samples made incomplete (missing completely at random, each "
        "lacking a random non-empty proper subset of its modalities; the seed also seeds the "
        "pattern); the test split is complete. Mean ± std over seeds "
        f"{', '.join(map(str, range(args.seeds)))}; at 0 % the two trainings are one run. Command: "
        "`python scripts/incomplete_study.py` (see the script's docstring).",
    ]
    fig, axes = plt.subplots(1, len(summary), figsize=(5.5 * len(summary), 3.8), squeeze=False)
    for axis, (task, cell) in zip(axes[0], summary.items(), strict=True):
        metric = cell["metric"]
        columns = list(cell["rows"][next(iter(cell["rows"]))][0])
        lines += ["", f"## {task} ({metric} %, test split)", ""]
        lines.append("| training | incomplete | " + " | ".join(columns) + " |")
        lines.append("|---|---:|" + "---:|" * len(columns))
        for title in TITLES.values():
            shown = title.replace("SF-MD", "ESANet-MD") if task == "segmentation" else title
            means = []
            for fraction in args.fractions:
                values = cell["rows"].get(f"{title}|{fraction:g}")
                if not values:
                    continue
                row = [shown, f"{100 * fraction:.0f} %"]
                for column in columns:
                    seeds = [v[column] for v in values]
                    spread = statistics.stdev(seeds) if len(seeds) > 1 else 0.0
                    row.append(f"{statistics.fmean(seeds):.2f} ± {spread:.2f}")
                lines.append("| " + " | ".join(row) + " |")
                averages = [v["average"] for v in values]
                spread = statistics.stdev(averages) if len(averages) > 1 else 0.0
                means.append((100 * fraction, statistics.fmean(averages), spread))
            if means:
                x, y, e = zip(*means, strict=True)
                axis.errorbar(x, y, yerr=e, marker="o", capsize=3, label=shown)
        axis.set_xlabel("incomplete training samples (%)")
        axis.set_ylabel(f"average {metric} over the combinations (%)")
        axis.set_title(task)
        axis.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(docs / "incomplete.png", lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    atomic_write_text(docs / "incomplete.md", "\n".join(lines) + "\n")
    print(json.dumps({t: c["metric"] for t, c in summary.items()}), "written in", docs)


if __name__ == "__main__":
    main()
