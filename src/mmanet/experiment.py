"""Train and evaluate a list of methods over seeds, reusing finished runs, and tabulate.

Layout under ``out``: ``seed-<s>/<method>/`` per run (the teacher first, since the
students distil from it), then ``results.json`` and ``results.md`` for the comparison.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

import mmanet
from mmanet.config import (
    METHOD_TITLES,
    Config,
    ConfigError,
    build_config,
    deep_merge,
    method_titles,
    to_dict,
)
from mmanet.data import DataBundle, build_data
from mmanet.engine import Trainer
from mmanet.io import atomic_write_json, atomic_write_text
from mmanet.metrics import summarize
from mmanet.modality import Modalities
from mmanet.report import aggregate, comparison_table

ABLATION_METHODS = ["sf_md", "sf_md_sp", "sf_mad", "sf_mad_sr", "mmanet"]
SEGMENTATION_METHODS = ["sf_md", "mmanet"]  # ESANet-MD and MMANet (paper Table 4)


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
    config.progress = progress
    report_path = run_dir / f"results_{split}.json"
    saved = run_dir / "config.yaml"
    if saved.is_file():
        if not same_experiment(build_config(overrides=yaml.safe_load(saved.read_text())), config):
            raise ConfigError(
                f"{run_dir} holds a run with a different config; choose another --out or remove it"
            )
        if report_path.is_file():
            return json.loads(report_path.read_text())
    trainer = Trainer(config, data)
    report = trainer.fit(resume=True)
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
) -> dict[str, Any]:
    """The customized baseline: one model per combination, each tested on its own one."""
    names = Modalities(data.modalities)
    per_combination = {}
    for mask in names.combinations:
        name = names.mask_name(mask)
        report = run_method(
            "customized", seed, out, config_path, overrides, data, None, split, progress, name
        )
        per_combination[name] = report["combinations"][name]
    return {
        "method": "customized",
        "split": split,
        "combinations": per_combination,
        **summarize(per_combination),
    }


RUNTIME_KEYS = ("progress", "threads", "tensorboard")
RUNTIME_DATA_KEYS = ("cache_dir", "num_workers", "eval_batch_size")


def same_experiment(a: Config, b: Config) -> bool:
    """Whether two configs describe the same run, ignoring keys that do not change results."""
    first, second = to_dict(a), to_dict(b)
    for config in (first, second):
        for key in RUNTIME_KEYS:
            config.pop(key)
        for key in RUNTIME_DATA_KEYS:
            config["data"].pop(key)
    return first == second


def compare(
    methods: Sequence[str],
    seeds: Sequence[int],
    out: str | Path,
    config_path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    split: str = "test",
    metric: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the teacher and every method for every seed; write the comparison tables.

    ``metric`` defaults to the task's: error (classification), ACER (anti-spoofing) or
    mIoU (segmentation).
    """
    out = Path(out)
    overrides = dict(overrides or {})
    base = build_config(config_path, overrides)
    data = build_data(base.data)
    if metric is None:
        metric = default_metric(data, base)
    reports: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    needs_teacher = "teacher" in methods or any(
        build_config(config_path, deep_merge(overrides, {"method": {"name": m}})).method.distill
        != "none"
        for m in methods
        if m != "customized"
    )
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
            reports[method].append(
                run_method(
                    method, seed, out, config_path, overrides, data, teacher_dir, split, progress
                )
            )
    students = {m: aggregate(reports[m]) for m in methods if m != "teacher"}
    summary = {
        "metric": metric,
        "split": split,
        "seeds": list(seeds),
        "code_version": mmanet.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": to_dict(base),
        "titles": method_titles(base.model.name),
        "teacher": aggregate(reports["teacher"]) if "teacher" in reports else None,
        "methods": students,
    }
    atomic_write_json(out / "results.json", summary)
    write_tables(summary, out / "results.md")
    return summary


def default_metric(data: DataBundle, config: Config) -> str:
    if data.task == "segmentation":
        return "miou"
    return "acer" if config.data.bona_fide_class is not None else "error"


def write_tables(summary: Mapping[str, Any], path: Path) -> str:
    metric, methods = summary["metric"], summary["methods"]
    titles = summary.get("titles", METHOD_TITLES)
    grouped = comparison_table(methods, metric, titles=titles)
    full = comparison_table(methods, metric, max_rows=10**6, titles=titles)
    seeds = summary["seeds"]
    text = (
        f"# Comparison ({metric} in %, {summary['split']} split, "
        f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})\n\n"
        f"{grouped}\n\n## Every combination\n\n{full}\n"
    )
    atomic_write_text(path, text)
    return text


def demo_config_path(task: str = "classification") -> Path:
    """The bundled demo: Multiple Features, or the rendered RGB-D scenes for segmentation."""
    folder = "rendered" if task == "segmentation" else "mfeat"
    return Path(mmanet.__file__).parent / "configs" / folder / "demo.yaml"
