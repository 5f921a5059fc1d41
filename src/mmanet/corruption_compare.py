"""Corrupted inputs across a comparison: every run of ``mmanet compare --corrupt`` evaluated
under the same corruptions (:func:`mmanet.corruption_eval.evaluate_corruptions`), the
errors over seeds, ImageNet-C's corruption error against the baseline method, a table and a
figure.

Each run's section is kept in ``<run>/evaluations/corruptions-<split>-<digest>.json`` (the
digest is of the specs and the corruption seed), so a comparison run again reuses it.

Corruption error (Hendrycks & Dietterich, ICLR 2019; :func:`mmanet.robustness.corruption_errors`)
of a method for a corruption: ``CE = 100 · Σ_s E_s / Σ_s E^ref_s`` over the severities,
where ``E_s`` is the error of the average over every combination at severity ``s`` and the
reference is the comparison's baseline method (ImageNet-C's AlexNet), paired by seed; mCE
is the mean over the corruptions (the baseline scores 100). The relative CE subtracts each
model's clean error from every term. A method trained per combination (the customized
baseline: one model per combination) has no single network to corrupt and is left out.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmanet.data import DataBundle
from mmanet.io import atomic_write_json
from mmanet.report import render_table, seed_stats


def run_section(
    run_dir: Path,
    data: DataBundle,
    specs: Sequence[str],
    split: str,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """The corruption section of one finished run (its result checkpoint), computed once and
    kept in the run's ``evaluations`` folder."""
    from mmanet.config import build_config
    from mmanet.corruption_eval import evaluate_corruptions
    from mmanet.engine import load_network, resolve_device
    from mmanet.engine.checkpoint import resolve_checkpoint
    from mmanet.engine.results import EVALUATIONS
    from mmanet.tasks import build_task

    digest = hashlib.sha256(json.dumps([list(specs), seed]).encode()).hexdigest()[:8]
    path = run_dir / EVALUATIONS / f"corruptions-{split}-{digest}.json"
    checkpoint = str(resolve_checkpoint(run_dir))  # the network is loaded only when needed
    if path.is_file():
        kept = json.loads(path.read_text())
        if kept.get("checkpoint") == checkpoint:
            return kept
    config = build_config(run_dir / "config.yaml")
    model, _ = load_network(checkpoint, modalities=data.modalities, model=config.model)
    device = resolve_device(config.device)
    task = build_task(data, config).to(device)
    section = evaluate_corruptions(
        model.to(device),
        data,
        task,
        specs,
        split,
        device,
        config.data.eval_batch_size,
        0,
        seed,
        progress,
    )
    section["checkpoint"] = checkpoint
    atomic_write_json(path, section)
    return section


def summarize_corruptions(
    sections: Mapping[str, Sequence[Mapping[str, Any]]], reference: str
) -> dict[str, Any]:
    """``sections``: method -> one corruption section per seed (same seeds, same specs).
    Per method: the clean error, each corruption's error per severity, CE and relative CE
    against ``reference`` (paired by seed), mCE and relative mCE; each as mean, std and the
    per-seed values."""
    from mmanet.robustness import corruption_errors

    first = next(iter(sections.values()))[0]
    labels = list(first["summary"])
    severities = {label: list(first["summary"][label]["errors"]) for label in labels}
    ref = sections[reference]
    methods: dict[str, Any] = {}
    for method, per_seed in sections.items():
        ce = {label: [] for label in labels}
        relative = {label: [] for label in labels}
        mce, relative_mce = [], []
        for own, base in zip(per_seed, ref, strict=True):
            errors = {label: list(own["summary"][label]["errors"].values()) for label in labels}
            base_errors = {
                label: list(base["summary"][label]["errors"].values()) for label in labels
            }
            result = corruption_errors(errors, own["clean_error"], base_errors, base["clean_error"])
            for label in labels:
                ce[label].append(result.ce[label])
                relative[label].append(result.relative_ce[label])
            mce.append(result.mce)
            relative_mce.append(result.relative_mce)
        methods[method] = {
            "clean_error": seed_stats([s["clean_error"] for s in per_seed]),
            "errors": {
                label: {
                    severity: seed_stats(
                        [s["summary"][label]["errors"][severity] for s in per_seed]
                    )
                    for severity in severities[label]
                }
                for label in labels
            },
            "ce": {label: seed_stats(values) for label, values in ce.items()},
            "relative_ce": {label: seed_stats(values) for label, values in relative.items()},
            "mce": seed_stats(mce),
            "relative_mce": seed_stats(relative_mce),
        }
    for method, result in methods.items():
        result["verdicts"] = _verdicts(result) if method != reference else None
    return {
        "metric": first["metric"],
        "error_form": first["error_form"],
        "specs": first["specs"],
        "seed": first["seed"],
        "reference": reference,
        "labels": labels,
        "methods": methods,
    }


def _verdicts(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """mCE and relative mCE against the reference's 100, paired by seed: the mean of
    (value − 100), its 95 % t interval over the seeds and the verdict
    (:func:`mmanet.verdicts.paired_interval`); None with one seed."""
    from mmanet.verdicts import paired_interval

    out = {}
    for key in ("mce", "relative_mce"):
        values = result[key]["values"]
        if len(values) < 2:
            return None
        if any(math.isnan(v) for v in values):
            out[key] = None
            continue
        interval = paired_interval([v - 100.0 for v in values], lower_is_better=True)
        out[key] = {
            "mean": interval.mean,
            "low": interval.low,
            "high": interval.high,
            "verdict": interval.verdict,
        }
    return out


def _cell(stat: Mapping[str, Any], best: float, markdown: bool, show_std: bool) -> str:
    text = f"{stat['mean']:.2f}" + (f" ± {stat['std']:.2f}" if show_std else "")
    if math.isnan(stat["mean"]):
        return "n/a"
    if markdown and math.isclose(stat["mean"], best, abs_tol=5e-3):
        return f"**{text}**"
    return text


def _row(label: str, stats: Mapping[str, Mapping[str, Any]], markdown: bool) -> list[str]:
    """One table row: every method's mean ± std, the lowest in bold (errors: lower is better)."""
    finite = [s["mean"] for s in stats.values() if not math.isnan(s["mean"])]
    best = min(finite) if finite and len(stats) > 1 else math.nan
    show_std = any(len(s["values"]) > 1 for s in stats.values())
    return [label, *[_cell(s, best, markdown, show_std) for s in stats.values()]]


def ce_table(summary: Mapping[str, Any], titles: Mapping[str, str], markdown: bool = True) -> str:
    """Rows = corruptions, then mCE and relative mCE; columns = methods (CE in %, the
    reference method 100)."""
    methods = summary["methods"]
    header = ["Corruption", *[titles.get(m, m) for m in methods]]
    rows = [
        _row(label, {m: r["ce"][label] for m, r in methods.items()}, markdown)
        for label in summary["labels"]
    ]
    rows.append(_row("mCE", {m: r["mce"] for m, r in methods.items()}, markdown))
    rows.append(_row("relative mCE", {m: r["relative_mce"] for m, r in methods.items()}, markdown))
    reference = titles.get(summary["reference"], summary["reference"])
    for key, label in (("mce", "mCE"), ("relative_mce", "relative mCE")):
        if all(r.get("verdicts") is None for r in methods.values()):
            break
        cells = []
        for r in methods.values():
            judged = (r.get("verdicts") or {}).get(key)
            cells.append(
                "—"
                if judged is None
                else f"{judged['mean']:+.2f} [{judged['low']:+.2f}, {judged['high']:+.2f}] "
                f"{judged['verdict']}"
            )
        rows.append([f"{label} − 100 vs {reference}", *cells])
    return render_table(header, rows, markdown)


def error_table(
    summary: Mapping[str, Any], titles: Mapping[str, str], markdown: bool = True
) -> str:
    """Rows = clean, then each corruption × severity; columns = methods: the error (%) of
    the average over every combination."""
    methods = summary["methods"]
    header = ["Corruption", "Severity", *[titles.get(m, m) for m in methods]]
    clean = _row("clean", {m: r["clean_error"] for m, r in methods.items()}, markdown)
    rows = [[clean[0], "0", *clean[1:]]]
    for label in summary["labels"]:
        for severity in next(iter(methods.values()))["errors"][label]:
            row = _row(
                label, {m: r["errors"][label][severity] for m, r in methods.items()}, markdown
            )
            rows.append([row[0], severity, *row[1:]])
    return render_table(header, rows, markdown)


def tables_section(summary: Mapping[str, Any], titles: Mapping[str, str]) -> str:
    """The ``results.md`` section of a comparison under corruptions."""
    reference = titles.get(summary["reference"], summary["reference"])
    error = "error" if summary["error_form"] == "value" else f"100 − {summary['metric']}"
    return (
        f"## Under corruptions\n\nCorruptions {', '.join(summary['specs'])} (seed "
        f"{summary['seed']}; docs/evaluation.md#corrupted-inputs), applied to the test inputs of "
        f"every combination. Error = {error} of the average over every combination. CE = 100 · "
        f"Σ_s E_s / Σ_s E^ref_s against {reference} (paired by seed; ImageNet-C's definition, "
        "lower is better); relative CE subtracts each model's clean error first. The last "
        "rows: mCE − 100 paired by seed, its 95 % t interval over the seeds and the verdict "
        "(docs/verdicts.md).\n\n"
        f"{ce_table(summary, titles)}\n\n### Error (%) per severity\n\n"
        f"{error_table(summary, titles)}"
    )


def corruption_curves(summary: Mapping[str, Any], titles: Mapping[str, str], path: Path) -> Path:
    """One panel per corruption: each method's error against severity (0: clean), mean over
    the seeds ± std shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = summary["labels"]
    per_row = min(len(labels), 4)
    lines = (len(labels) + per_row - 1) // per_row
    figure, axes = plt.subplots(
        lines, per_row, figsize=(3.6 * per_row, 3.0 * lines), squeeze=False, sharey=True
    )
    for axis in axes.flat[len(labels) :]:
        axis.set_visible(False)
    for axis, label in zip(axes.flat, labels, strict=False):
        for method, result in summary["methods"].items():
            stats = [result["clean_error"], *result["errors"][label].values()]
            x = [0, *(int(s) for s in result["errors"][label])]
            means = [s["mean"] for s in stats]
            stds = [0.0 if math.isnan(s["std"]) else s["std"] for s in stats]
            axis.plot(x, means, marker="o", markersize=3, label=titles.get(method, method))
            axis.fill_between(
                x,
                [m - s for m, s in zip(means, stds, strict=True)],
                [m + s for m, s in zip(means, stds, strict=True)],
                alpha=0.15,
            )
        axis.set_title(label, fontsize=9)
        axis.set_xlabel("severity (0: clean)")
        axis.set_xticks(range(0, 6))
        axis.grid(alpha=0.3)
    for axis in axes[:, 0]:
        error = (
            summary["metric"]
            if summary["error_form"] == "value"
            else (f"100 − {summary['metric']}")
        )
        axis.set_ylabel(f"{error} (%), mean over combinations")
    handles, names = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, names, loc="lower center", ncol=min(len(names), 5), fontsize=8)
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


__all__ = [
    "ce_table",
    "corruption_curves",
    "error_table",
    "run_section",
    "summarize_corruptions",
    "tables_section",
]
