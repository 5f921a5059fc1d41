"""The recipe for a user's own data, on three public datasets: SF-MD, MMANet with the
shipped config, and MMANet after ``mmanet tune`` (chosen on val, tested once).

For each dataset of ``configs/public/`` (breast_cancer, digits_views, japanese_vowels):

1. ``mmanet.experiment.compare`` with methods ``sf_md,mmanet`` over the seeds: the teacher
   once per seed (complete data), SF-MD and MMANet with the shipped config, tested, and the
   computed verdicts against SF-MD (``OUT/<dataset>/shipped/``);
2. ``mmanet.tune.tune`` for MMANet on seed 0's val split, the default search space, median
   pruning, distilling from the seed-0 teacher of step 1 (``OUT/<dataset>/tune/``);
3. the tuned config (``OUT/<dataset>/tune/best.yaml``) trained for every seed, each seed
   distilling from its own teacher of step 1, and tested once (``OUT/<dataset>/tuned/``);
   then steps 2-3 for SF-MD as a control (``tune_sf_md/``, its default space: lr and
   weight decay), so that tuned MMANet is also judged against a tuned baseline;
4. ``OUT/<dataset>/summary.json``; then the page (``DOCS/own_data.md``, ``.json``, ``.png``)
   from every dataset's summary found under OUT (datasets run in separate invocations
   are merged into one page).

Finished runs are reused (compare's runs, the tune study, the tuned runs), so an
interrupted invocation is continued by running it again.

Usage: python scripts/own_data_study.py [--out runs/own_data] [--docs docs/results]
           [--datasets breast_cancer digits_views japanese_vowels] [--seeds 3]
           [--trials 20] [--jobs 2] [key=value ...]

``key=value`` applies to every run (a smoke test: ``optim.epochs=3
optim.warmup_epochs=1 method.mar.warmup_epochs=1 --trials 3``); the page lists them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

DATASETS = ("breast_cancer", "digits_views", "japanese_vowels")
COLUMNS = ("sf_md", "mmanet", "mmanet_tuned", "sf_md_tuned")
TITLES = {
    "sf_md": "SF-MD",
    "mmanet": "MMANet (shipped)",
    "mmanet_tuned": "MMANet (tuned)",
    "sf_md_tuned": "SF-MD (tuned)",
}
METHOD_NAMES = {"mmanet": "MMANet", "sf_md": "SF-MD"}
TUNED = ("mmanet", "sf_md")  # the methods tuned, each on seed 0's val split
TUNE_DIRS = {"mmanet": "tune", "sf_md": "tune_sf_md"}
METRIC = "error"


def metric_lower_is_better() -> bool:
    """Which way :data:`METRIC` is better, as the classification task declares it."""
    from mmanet.tasks import ClassificationTask

    return ClassificationTask.lower_is_better(METRIC)


def public_config(dataset: str) -> Path:
    import mmanet

    return Path(mmanet.__file__).parent / "configs" / "public" / f"{dataset}.yaml"


def settings(extra: list[str]) -> dict[str, Any]:
    """Every run's overrides: the user's ``key=value`` and the runtime keys of a study on
    2 cores (one thread a run, loaders in-process, no live output)."""
    from mmanet.config import deep_merge, parse_overrides

    runtime = {
        "threads": 1,
        "progress": False,
        "tensorboard": False,
        "data": {"num_workers": 0},
    }
    return deep_merge(parse_overrides(extra), runtime)


def stage(name: str) -> float:
    print(f"[{time.strftime('%H:%M:%S')}] {name}", flush=True)
    return time.monotonic()


def study(dataset: str, args: argparse.Namespace) -> dict[str, Any]:
    """Steps 1-3 for one dataset; returns (and writes) its summary."""
    from mmanet.config import build_config, deep_merge
    from mmanet.data import build_data
    from mmanet.experiment import compare, run_method
    from mmanet.report import aggregate
    from mmanet.tune import tune

    root = Path(args.out) / dataset
    config_path = public_config(dataset)
    overrides = settings(args.overrides)
    seeds = list(range(args.seeds))
    seconds: dict[str, float] = {}

    start = stage(f"{dataset}: teacher, SF-MD and MMANet (shipped), seeds {seeds}")
    shipped = compare(
        ["sf_md", "mmanet"], seeds, root / "shipped", config_path, overrides,
        progress=False, jobs=args.jobs,
    )  # fmt: skip
    seconds["shipped"] = time.monotonic() - start

    searches, tuned = {}, {}
    teachers = {s: root / "shipped" / f"seed-{s}" / "teacher" for s in seeds}
    for method in TUNED:
        folder = root / TUNE_DIRS[method]
        start = stage(f"{dataset}: mmanet tune --method {method}, {args.trials} trials, seed 0 val")
        layer = deep_merge(overrides, {"seed": 0})
        if method == "mmanet":  # the trials distil from the seed-0 teacher of the shipped runs
            layer = deep_merge(layer, {"method": {"teacher": str(teachers[0])}})
        searches[method] = tune(config_path, layer, folder, trials=args.trials, method=method)
        seconds[f"tune_{method}"] = time.monotonic() - start
        if searches[method]["best"] is None:
            raise SystemExit(f"{dataset}: {method}: no complete trial, so no best.yaml; rerun")
        start = stage(f"{dataset}: {method} with {folder.name}/best.yaml, seeds {seeds}, tested")
        best_yaml = folder / "best.yaml"
        data = build_data(build_config(best_yaml, overrides).data)
        tuned[method] = []
        for seed in seeds:
            teacher = teachers[seed] if method == "mmanet" else None
            report = run_method(
                method, seed, root / "tuned", best_yaml, overrides, data, teacher, "test", False
            )
            tuned[method].append(report)
            print(f"  {method} tuned, seed {seed}: average error {report['average'][METRIC]:.2f}")
        seconds[f"tuned_{method}"] = time.monotonic() - start

    shipped_reports = {
        m: [json.loads((root / "shipped" / f"seed-{s}" / m / "results_test.json").read_text())
            for s in seeds]
        for m in ("teacher", "mmanet")
    }  # fmt: skip
    configs = {
        f"{m}_tuned": build_config(root / TUNE_DIRS[m] / "best.yaml", overrides) for m in TUNED
    }
    for m in ("sf_md", "mmanet"):
        configs[m] = build_config(config_path, deep_merge(overrides, {"method": {"name": m}}))
    summary = {
        "dataset": dataset,
        "config": f"configs/public/{dataset}.yaml",
        "classes": len(data.class_names),
        "modalities": list(data.modalities),
        "sizes": {s: len(getattr(data, s)) for s in ("train", "val", "test")},
        "seeds": seeds,
        "overrides": args.overrides,
        "epochs": {m: c.optim.epochs for m, c in configs.items()},
        "validation_every": {m: c.validation.every for m, c in configs.items()},
        "teacher": shipped["teacher"],
        "methods": {
            "sf_md": shipped["methods"]["sf_md"],
            "mmanet": shipped["methods"]["mmanet"],
            "mmanet_tuned": aggregate(tuned["mmanet"]),
            "sf_md_tuned": aggregate(tuned["sf_md"]),
        },
        "omega": {
            "mmanet": [r.get("omega") for r in shipped_reports["mmanet"]],
            "mmanet_tuned": [r.get("omega") for r in tuned["mmanet"]],
        },
        "loss_scale": loss_scale(root / "shipped" / "seed-0" / "mmanet", configs["mmanet"]),
        "tune": {
            m: {
                "trials": args.trials,
                "pruner": "median",
                "best": searches[m]["best"],
                "states": _states(searches[m]["trials"]),
                "shipped_values": {
                    k: _lookup(configs[m], k) for k in searches[m]["best"]["params"]
                },
                "trial_seconds": sum(float(r.get("seconds") or 0.0) for r in searches[m]["trials"]),
            }
            for m in TUNED
        },
        "seconds": seconds,
        "command": "python " + shlex.join(sys.argv),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    previous = root / "summary.json"
    if previous.is_file():  # a resumed study: the time of the earlier invocations too
        before = json.loads(previous.read_text()).get("seconds", {})
        # "tune" / "tuned": the MMANet stages, named so before SF-MD was tuned too
        before.setdefault("tune_mmanet", before.get("tune", 0.0))
        before.setdefault("tuned_mmanet", before.get("tuned", 0.0))
        summary["seconds"] = {k: v + before.get(k, 0.0) for k, v in seconds.items()}
    from mmanet.io import atomic_write_json

    atomic_write_json(root / "summary.json", summary)
    return summary


def loss_scale(run: Path, config: Any) -> dict[str, float]:
    """α × the MAD loss over the task loss in the first and the last epoch of a run."""
    epochs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line]
    epochs = [e for e in epochs if "loss_task" in e and "loss_distill" in e]
    alpha = config.method.alpha
    return {
        "alpha": alpha,
        "first": alpha * epochs[0]["loss_distill"] / epochs[0]["loss_task"],
        "last": alpha * epochs[-1]["loss_distill"] / epochs[-1]["loss_task"],
    }


def _states(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return counts


def _lookup(config: Any, key: str) -> Any:
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def full_name(combinations: list[str]) -> str:
    return max(combinations, key=lambda name: name.count("+"))


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {spread:.2f}"


def judged_rows(judged: dict[str, Any], method: str, label: str) -> list[str]:
    """The rows of one verdict column with the given verdict."""
    return [r["row"] for r in judged["methods"][method]["rows"] if r["verdict"] == label]


def describe(summary: dict[str, Any], judged: dict[str, dict[str, Any]]) -> list[str]:
    """Plain-words bullets from the computed verdicts (nothing here is typed by hand)."""
    from mmanet.verdicts import format_interval

    lines = []
    results = summary["methods"]
    full = full_name(list(results["sf_md"]))
    teacher = summary["teacher"][full][METRIC]
    chance = 100 * (1 - 1 / summary["classes"])
    lines.append(
        f"- The teacher (complete data) errs on {teacher['mean']:.2f} ± {teacher['std']:.2f} % "
        f"of the test set with every view ({full}); guessing among {summary['classes']} "
        f"classes errs on {chance:.0f} %."
    )
    for column in COLUMNS:
        worst = max(results[column], key=lambda c: results[column][c][METRIC]["mean"])
        value = results[column][worst][METRIC]["mean"]
        if value >= 0.8 * chance:
            lines.append(
                f"- **{TITLES[column]} is near chance on {worst}** ({value:.2f} % error, "
                f"guessing {chance:.0f} %)."
            )
    lines.append(bullet(judged["vs_sf_md"], "mmanet"))
    lines.append(bullet(judged["vs_sf_md"], "mmanet_tuned"))
    lines.append(bullet(judged["like_for_like"], "mmanet_tuned"))
    tuned = [
        f"{TITLES[m]} − {TITLES[judged[key]['baseline']]} {format_interval(_row(judged[key], m))}"
        for key, m in (("tuning", "mmanet_tuned"), ("sf_md_tuning", "sf_md_tuned"))
    ]
    lines.append(f"- **What tuning did** (average over the combinations): {'; '.join(tuned)}.")
    scale = summary["loss_scale"]
    lines.append(
        f"- In the shipped MMANet run (seed 0, α = {scale['alpha']:g}) the distillation term "
        f"α × MAD is {scale['first']:.1f}× the task loss in the first epoch and "
        f"{scale['last']:.1f}× in the last."
    )
    return lines


def _row(judged: dict[str, Any], method: str, start: str = "Average") -> dict[str, Any]:
    return next(r for r in judged["methods"][method]["rows"] if r["row"].startswith(start))


def bullet(judged: dict[str, Any], column: str) -> str:
    """One column against the baseline of ``judged``, in words."""
    from mmanet.verdicts import BETTER, NOISE, WORSE, format_interval

    baseline = TITLES[judged["baseline"]]
    rows = judged["methods"][column]["rows"]
    better, worse = judged_rows(judged, column, BETTER), judged_rows(judged, column, WORSE)
    noise = judged_rows(judged, column, NOISE)
    test = judged["methods"][column]["wilcoxon"]
    return " ".join(
        [
            f"- **{TITLES[column]} vs {baseline}**: average "
            f"{format_interval(_row(judged, column))}, single-view average "
            f"{format_interval(_row(judged, column, 'Single'))}.",
            f"*Better* on {_listing(better)};" if better else "*Better* on no row;",
            f"*worse* on {_listing(worse)};" if worse else "*worse* on no row;",
            f"*within noise* on {len(noise)} of {len(rows)} rows.",
            f"Pooled Wilcoxon (optimistic): p = {test['p_value']:.2g}, {test['verdict']}.",
        ]
    )


def _listing(rows: list[str]) -> str:
    return ", ".join(f"`{r}`" if "+" in r or " " not in r else r for r in rows)


# name -> (baseline, the columns judged against it); "vs_sf_md" is the comparison asked for
JUDGEMENTS = {
    "vs_sf_md": ("sf_md", ("mmanet", "mmanet_tuned")),
    "like_for_like": ("sf_md_tuned", ("mmanet_tuned",)),
    "tuning": ("mmanet", ("mmanet_tuned",)),
    "sf_md_tuning": ("sf_md", ("sf_md_tuned",)),
}


def judge(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    from mmanet.verdicts import verdicts

    return {
        name: verdicts(
            {m: results[m] for m in (base, *columns)},
            METRIC,
            base,
            lower_is_better=metric_lower_is_better(),
        )
        for name, (base, columns) in JUDGEMENTS.items()
    }


def overview(summaries: list[dict[str, Any]], judgements: dict[str, Any]) -> list[str]:
    """The findings over the datasets, counted from the verdicts (not typed by hand)."""
    from mmanet.verdicts import BETTER, NOISE, WORSE

    lines = ["", "## What it shows", ""]
    fair = [
        r["verdict"]
        for s in summaries
        for r in judgements[s["dataset"]]["like_for_like"]["methods"]["mmanet_tuned"]["rows"]
    ]
    shipped = [_row(judgements[s["dataset"]]["vs_sf_md"], "mmanet")["verdict"] for s in summaries]
    if all(v == NOISE for v in fair):
        lines += [
            "**Where both are tuned alike, MMANet does not help here**: MMANet (tuned) and "
            "SF-MD (tuned) are *within noise* of each other on every row of every dataset, "
            "single views included. "
            + (
                f"With the shipped config MMANet is *worse* than SF-MD on the average of "
                f"{shipped.count(WORSE)} of {len(shipped)} datasets and *better* on "
                f"{shipped.count(BETTER)}. "
                if WORSE in shipped or BETTER in shipped
                else "With the shipped config the two are also *within noise* on average. "
            )
            + "The counts:",
            "",
        ]
    for key, column in (
        ("vs_sf_md", "mmanet"),
        ("vs_sf_md", "mmanet_tuned"),
        ("like_for_like", "mmanet_tuned"),
    ):
        base = TITLES[JUDGEMENTS[key][0]]
        parts = []
        for start, label in (("Average", "the average over the combinations"),
                             ("Single", "the single-view average")):  # fmt: skip
            verdict = {s["dataset"]: _row(judgements[s["dataset"]][key], column, start)["verdict"]
                       for s in summaries}  # fmt: skip
            counted = [
                f"*{kind}* on {_names([d for d, v in verdict.items() if v == kind])}"
                for kind in (BETTER, WORSE, NOISE)
                if kind in verdict.values()
            ]
            parts.append(f"on {label} {', '.join(counted)}")
        rows = [
            r["verdict"]
            for s in summaries
            for r in judgements[s["dataset"]][key]["methods"][column]["rows"]
        ]
        lines.append(
            f"- **{TITLES[column]} vs {base}**: {'; '.join(parts)}. Over every row of every "
            f"dataset: {rows.count(BETTER)} *better*, {rows.count(WORSE)} *worse*, "
            f"{rows.count(NOISE)} *within noise* of {len(rows)}."
        )
    ratios = []
    for method in TUNED:
        per = []
        for s in summaries:
            tune = s["tune"][method]
            per.append(
                f"{tune['best']['params']['optim.lr'] / tune['shipped_values']['optim.lr']:.1f}×"
            )
        ratios.append(f"{METHOD_NAMES[method]} {', '.join(per)}")
    names = ", ".join(s["dataset"] for s in summaries)
    lines.append(
        f"- **The tuned learning rate over the shipped one** ({names}): {'; '.join(ratios)}."
    )
    alphas = ", ".join(f"{s['tune']['mmanet']['best']['params']['method.alpha']:.3g}"
                       for s in summaries)  # fmt: skip
    scales = ", ".join(
        f"{s['loss_scale']['first']:.1f}× → {s['loss_scale']['last']:.1f}×" for s in summaries
    )
    lines.append(
        f"- **MMANet's α**: shipped {summaries[0]['loss_scale']['alpha']:g}, where α × MAD is "
        f"this many times the task loss in the first → last epoch (seed 0): {scales}; tuned "
        f"α: {alphas}."
    )
    few = [
        f"{s['dataset']} ({m}: {s['tune'][m]['states'].get('COMPLETE', 0)} of "
        f"{s['tune'][m]['trials']})"
        for s in summaries
        for m in TUNED
        if s["tune"][m]["states"].get("COMPLETE", 0) <= 5
    ]
    if few:
        lines.append(
            "- **Few complete trials** where the median pruner stopped most of them: "
            f"{', '.join(few)}; the best is then one of the first, unpruned trials."
        )
    return lines


def _names(datasets: list[str]) -> str:
    return ", ".join(datasets) if datasets else "none"


def write_page(summaries: list[dict[str, Any]], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from mmanet.io import atomic_write, atomic_write_json, atomic_write_text
    from mmanet.report import comparison_table
    from mmanet.verdicts import format_interval, t_quantile, verdict_section

    docs = Path(args.docs)
    record: dict[str, Any] = {"datasets": {}}
    seeds = sorted({s for summary in summaries for s in summary["seeds"]})
    first = summaries[0]
    extra = " ".join(first["overrides"])
    trials = first["tune"]["mmanet"]["trials"]
    lines = [
        "# The own-data recipe on three public datasets: SF-MD, MMANet shipped, MMANet tuned",
        "",
        "Error (%) on each dataset's test split, mean ± std over seeds "
        f"{', '.join(map(str, seeds))}, for every combination of views. The columns:",
        "",
        "- **SF-MD**: the unified baseline (modality dropout, no teacher, no MAR), "
        "the dataset's shipped `configs/public/<name>.yaml`;",
        "- **MMANet (shipped)**: MMANet (MAD from a complete-data teacher + MAR) with the "
        "same shipped config, untouched;",
        f"- **MMANet (tuned)**: `mmanet tune --method mmanet --trials {trials}` (Optuna TPE, "
        "the default search space: α, β, MAR's warm-up, lr, weight decay; median pruning) "
        "on **seed 0's val split**, then `tune/best.yaml` trained for every seed and tested "
        "once;",
        f"- **SF-MD (tuned)**, a control the issue did not ask for: the same with `--method "
        f"sf_md` ({trials} trials over its default space, lr and weight decay). Without it, "
        "*MMANet (tuned) vs SF-MD* credits MMANet with what tuning the learning rate and "
        "picking the epoch on val do for any method; *MMANet (tuned) vs SF-MD (tuned)* is "
        "the like-for-like comparison.",
        "",
        "The teacher is trained once per seed (shipped config, `method.name=teacher`); both "
        "MMANet columns of a seed distil from it, and the MMANet tuning trials from seed 0's. "
        "The configs fix `data.split_seed: 0`, so the seeds share one train / val / test "
        "split and differ in initialization, dropout masks and batch order.",
        "",
        "Verdicts are computed by `mmanet.verdicts` (docs/verdicts.md): the paired "
        "per-seed difference in error points with its 95 % t interval over the seeds "
        "(*better* / *worse* when it excludes 0, *within noise* otherwise), and the pooled "
        "Wilcoxon test over seeds × combinations, which is optimistic (one model per seed "
        f"serves every combination). With {len(seeds)} seeds t = "
        f"{t_quantile(0.975, max(len(seeds) - 1, 1)):.2f}: only consistent "
        "differences are called.",
        "",
        "**Epoch selection differs between shipped and tuned.** The shipped configs do not "
        "validate during training (`validation.every: 0`) and test the last epoch; "
        "`best.yaml` keeps the tuner's `validation.every: 1` and tests the epoch with the "
        "best val error (the documented `mmanet train --config DIR/best.yaml`). Both tuned "
        "columns have it, so it cancels in *MMANet (tuned) vs SF-MD (tuned)*, not in the "
        "comparisons of a tuned column with a shipped one.",
    ]
    if extra:
        lines += ["", f"**Smoke-test settings, not the study**: every run had `{extra}`."]
    judgements = {s["dataset"]: judge(s["methods"]) for s in summaries}
    verdict_columns = [
        ("vs_sf_md", "mmanet"),
        ("vs_sf_md", "mmanet_tuned"),
        ("like_for_like", "mmanet_tuned"),
    ]
    lines += overview(summaries, judgements)
    lines += [
        "",
        "## At a glance",
        "",
        "Average error over every combination and over the single views (test, mean ± std "
        "over seeds), and the verdicts on those rows (every combination in each dataset's "
        "section).",
        "",
        "| Dataset | Row | " + " | ".join(TITLES[c] for c in COLUMNS) + " | "
        + " | ".join(
            f"{TITLES[c]} vs {TITLES[JUDGEMENTS[k][0]]}" for k, c in verdict_columns
        )
        + " |",
        "|---|---|" + "---:|" * len(COLUMNS) + "---|" * len(verdict_columns),
    ]  # fmt: skip
    for summary in summaries:
        results, judged = summary["methods"], judgements[summary["dataset"]]
        for label, key in (("average", "Average"), ("single views", "Single")):
            cells = [mean_std(_group(results[c], "all" if key == "Average" else "single"))
                     for c in COLUMNS]  # fmt: skip
            found = [format_interval(_row(judged[k], c, key)) for k, c in verdict_columns]
            lines.append(
                f"| {summary['dataset']} | {label} | {' | '.join(cells)} | {' | '.join(found)} |"
            )
    for summary in summaries:
        name = summary["dataset"]
        results = summary["methods"]
        judged = judgements[name]
        record["datasets"][name] = {**summary, "verdicts": judged}
        sizes = summary["sizes"]
        full = full_name(list(results["sf_md"]))
        teacher = summary["teacher"]
        teacher_rows = [
            f"| {combo} | {mean_std(teacher[combo][METRIC]['values'])} |" for combo in teacher
        ]
        omega = summary["omega"]
        epochs = sorted(set(summary["epochs"].values()))
        lines += [
            "",
            f"## {name}",
            "",
            f"`{summary['config']}`: {summary['classes']} classes, views "
            f"{', '.join(f'`{m}`' for m in summary['modalities'])}; train / val / test "
            f"{sizes['train']} / {sizes['val']} / {sizes['test']}; "
            f"{' / '.join(map(str, epochs))} epochs.",
            "",
            "### What it shows",
            "",
            *describe(summary, judged),
            "",
            f"### Error (%) per combination, test split, seeds {', '.join(map(str, seeds))}",
            "",
            comparison_table(
                results, METRIC, titles=TITLES, lower_is_better=metric_lower_is_better()
            ),
            "",
            "### Verdicts against SF-MD (the comparison asked for)",
            "",
            verdict_section(judged["vs_sf_md"], TITLES),
            "",
            "### Like for like: MMANet (tuned) against SF-MD (tuned)",
            "",
            verdict_section(judged["like_for_like"], TITLES),
            "",
            "### What tuning did: each tuned column against its shipped one",
            "",
            verdict_section(judged["tuning"], TITLES),
            "",
            verdict_section(judged["sf_md_tuning"], TITLES),
            "",
            "### Tuning",
            "",
        ]
        for method in TUNED:
            tune = summary["tune"][method]
            states = ", ".join(f"{v} {k.lower()}" for k, v in sorted(tune["states"].items()))
            best = tune["best"]
            lines += [
                f"`mmanet tune --method {method}` into `{TUNE_DIRS[method]}/`: "
                f"{tune['trials']} finished trials asked ({states}), {tune['pruner']} pruner, "
                f"sampler seed 0, seed-0 config{' and teacher' if method == 'mmanet' else ''}; "
                f"best: trial {best['number']}, val error {best['value']:.2f} % (average over "
                f"the combinations, at its best epoch); the trials took "
                f"{tune['trial_seconds']:.0f} s.",
                "",
                "| parameter | shipped | tuned |",
                "|---|---:|---:|",
                *[
                    f"| `{key}` | {_fmt(tune['shipped_values'][key])} | {_fmt(value)} |"
                    for key, value in best["params"].items()
                ],
                "",
            ]
        seconds = summary["seconds"]
        lines += [
            f"MAR's mined set Ω per seed — shipped: {_omega(omega['mmanet'])}; tuned: "
            f"{_omega(omega['mmanet_tuned'])}.",
            "",
            f"Teacher (trained on complete data; its row {full} is the one it was trained for):",
            "",
            "| Combination | Teacher |",
            "|---|---:|",
            *teacher_rows,
            "",
            "Wall time on this machine, summed over the script's invocations: teacher, SF-MD "
            f"and MMANet (shipped) {seconds['shipped']:.0f} s (two runs at a time); MMANet "
            f"tuning {seconds['tune_mmanet']:.0f} s, its tuned runs "
            f"{seconds['tuned_mmanet']:.0f} s; SF-MD tuning {seconds['tune_sf_md']:.0f} s, "
            f"its tuned runs {seconds['tuned_sf_md']:.0f} s.",
        ]
    cores = os.cpu_count()
    commands = sorted({s.get("command", "python scripts/own_data_study.py") for s in summaries})
    command = "`, `".join(commands)
    lines += [
        "",
        "## How it was made",
        "",
        f"Command: `{command}` (runs under `{args.out}/<dataset>/`: `shipped/` = "
        "`mmanet compare --methods sf_md,mmanet`, `tune/` and `tune_sf_md/` = `mmanet tune`, "
        "`tuned/` = `mmanet train --config <tune folder>/best.yaml` per seed). Equivalent "
        "commands for one dataset, e.g. breast cancer:",
        "",
        "```bash",
        f"mmanet compare --config configs/public/breast_cancer.yaml --methods sf_md,mmanet "
        f"--seeds 3 --jobs 2 --out {args.out}/breast_cancer/shipped threads=1",
        f"mmanet tune --config configs/public/breast_cancer.yaml --method mmanet --trials "
        f"{trials} --out {args.out}/breast_cancer/tune seed=0 threads=1 "
        f"method.teacher={args.out}/breast_cancer/shipped/seed-0/teacher",
        f"mmanet train --config {args.out}/breast_cancer/tune/best.yaml seed=S "
        f"method.teacher={args.out}/breast_cancer/shipped/seed-S/teacher "
        f"out={args.out}/breast_cancer/tuned/seed-S/mmanet threads=1   # S = 0, 1, 2",
        f"mmanet tune --config configs/public/breast_cancer.yaml --method sf_md --trials "
        f"{trials} --out {args.out}/breast_cancer/tune_sf_md seed=0 threads=1",
        f"mmanet train --config {args.out}/breast_cancer/tune_sf_md/best.yaml seed=S "
        f"out={args.out}/breast_cancer/tuned/seed-S/sf_md threads=1   # S = 0, 1, 2",
        "```",
        "",
        f"Date {max(s['created'] for s in summaries)[:10]}; torch {torch.__version__}; "
        f"Python {platform.python_version()}; {platform.machine()} CPU, {cores} cores "
        "(one thread a run, at most two runs at a time). Numbers: "
        "`own_data.json`; figure: `own_data.png`.",
        "",
        "![average and single-view error per dataset](own_data.png)",
    ]
    fig, axes = plt.subplots(1, len(summaries), figsize=(4.2 * len(summaries), 3.6))
    axes = axes if len(summaries) > 1 else [axes]
    for axis, summary in zip(axes, summaries, strict=True):
        results = summary["methods"]
        rows = {"single views": [], "average": []}
        for column in COLUMNS:
            for label, key in (("single views", "single"), ("average", "all")):
                per_seed = _group(results[column], key)
                rows[label].append((statistics.fmean(per_seed), _sd(per_seed)))
        width = 0.8 / len(COLUMNS)
        for i, column in enumerate(COLUMNS):
            xs = [j + (i - (len(COLUMNS) - 1) / 2) * width for j in range(len(rows))]
            ys = [rows[label][i][0] for label in rows]
            es = [rows[label][i][1] for label in rows]
            axis.bar(xs, ys, width, yerr=es, capsize=3, label=TITLES[column])
        axis.set_xticks(range(len(rows)), list(rows))
        axis.set_title(summary["dataset"])
        axis.set_ylabel("test error (%)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    atomic_write(docs / "own_data.png", lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    atomic_write_json(docs / "own_data.json", record)
    atomic_write_text(docs / "own_data.md", "\n".join(lines) + "\n")
    print(f"written: {docs / 'own_data.md'}, .json, .png", flush=True)


def _group(result: dict[str, Any], key: str) -> list[float]:
    """Per-seed mean error over the single views (``single``) or every combination."""
    names = [n for n in result if key == "all" or "+" not in n]
    seeds = len(result[names[0]][METRIC]["values"])
    return [statistics.fmean(result[n][METRIC]["values"][s] for n in names) for s in range(seeds)]


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _omega(per_seed: list[Any]) -> str:
    return "; ".join(
        "{" + ", ".join(f"`{c}`" for c in omega) + "}" if omega else "—" for omega in per_seed
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/own_data")
    parser.add_argument("--docs", default="docs/results", help="where the page goes")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time in compare")
    parser.add_argument("--page-only", action="store_true", help="write the page from OUT")
    parser.add_argument("overrides", nargs="*", help="key=value for every run")
    args = parser.parse_args()
    begin = time.monotonic()
    if not args.page_only:
        for dataset in args.datasets:
            study(dataset, args)
    summaries = []
    for dataset in DATASETS:  # every dataset finished so far, also by other invocations
        path = Path(args.out) / dataset / "summary.json"
        if path.is_file():
            summaries.append(json.loads(path.read_text()))
    if summaries:
        write_page(summaries, args)
    print(f"done in {time.monotonic() - begin:.0f} s", flush=True)


if __name__ == "__main__":
    main()
