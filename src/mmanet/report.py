"""Comparison tables (markdown and plain text) and the aggregated ``results.json``.

Which way a metric is better is the task's to say (:attr:`mmanet.tasks.Task.metrics`);
the tables are given it (``lower_is_better``), as a comparison records it."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any


def aggregate(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """combination -> metric -> {"mean", "std", "values"} over the seeds of one method.

    ``per_seed`` holds one test report (``{"combinations": {name: metrics}}``) per seed.
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, metrics in per_seed[0]["combinations"].items():
        out[name] = {}
        for metric, first in metrics.items():
            if not isinstance(first, (int, float)):
                continue  # e.g. per-class IoU lists stay in each run's own report
            values = [report["combinations"][name][metric] for report in per_seed]
            out[name][metric] = seed_stats(values)
    return out


def seed_stats(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std", "values"}`` of one number over the seeds (:func:`sample_std`)."""
    values = list(values)
    return {"mean": statistics.fmean(values), "std": sample_std(values), "values": values}


def defined_mean(values: Sequence[float]) -> float:
    """The mean of the values that are numbers (NaN: a combination that does not define
    it); NaN when none is."""
    defined = [v for v in values if not math.isnan(v)]
    return statistics.fmean(defined) if defined else math.nan


def sample_std(values: Sequence[float]) -> float:
    """The sample standard deviation over seeds (0 for one value, NaN when one is NaN: a
    number a combination does not define, e.g. a rise in confidence of a single modality)."""
    if any(math.isnan(v) for v in values):
        return math.nan
    return statistics.stdev(values) if len(values) > 1 else 0.0


def row_groups(combinations: Sequence[str], max_rows: int = 16) -> list[tuple[str, list[str]]]:
    """Table rows: every combination, or for many of them one row per number of modalities."""
    if len(combinations) <= max_rows:
        groups = [(name, [name]) for name in combinations]
    else:
        by_size: dict[int, list[str]] = {}
        for name in combinations:
            by_size.setdefault(name.count("+") + 1, []).append(name)
        groups = [
            (f"{size} modalit{'y' if size == 1 else 'ies'} (mean of {len(names)})", names)
            for size, names in by_size.items()
        ]
    singles = [n for n in combinations if "+" not in n]
    groups.append(("Single-modality average", singles))
    groups.append((f"Average ({len(combinations)} combinations)", list(combinations)))
    return groups


def comparison_table(
    results: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
    metric: str = "error",
    max_rows: int = 16,
    markdown: bool = True,
    titles: Mapping[str, str] | None = None,
    *,
    lower_is_better: bool,
) -> str:
    """Rows = combinations (+ averages), columns = methods; best per row in bold (the
    lowest when ``lower_is_better``, as the task declares ``metric``, else the highest).

    ``results`` maps method -> combination -> metric -> {"values": one per seed, ...}
    (see :func:`aggregate`); a grouped row's std is over the seeds' group means, each the
    mean over the group's combinations that define the number (not NaN).
    """
    if titles is None:
        from mmanet.methods import method_titles

        titles = method_titles()
    methods = list(results)
    combinations = list(next(iter(results.values())))
    show_std = any(len(stat[metric]["values"]) > 1 for r in results.values() for stat in r.values())
    header = ["Combination", *[titles.get(m, m) for m in methods]]
    rows = []
    for label, names in row_groups(combinations, max_rows):
        means, stds = {}, {}
        for m in methods:
            per_seed = [
                defined_mean(seed_values)
                for seed_values in zip(
                    *(results[m][n][metric]["values"] for n in names), strict=True
                )
            ]
            means[m] = statistics.fmean(per_seed)
            stds[m] = sample_std(per_seed)
        finite = [v for v in means.values() if not math.isnan(v)]
        best = (min if lower_is_better else max)(finite) if finite else math.nan
        cells = []
        for m in methods:
            text = f"{means[m]:.2f}" + (f" ± {stds[m]:.2f}" if show_std else "")
            if math.isnan(means[m]):
                text = "n/a"  # e.g. a number not defined for this row's combinations
            elif markdown and len(methods) > 1 and math.isclose(means[m], best, abs_tol=5e-3):
                text = f"**{text}**"
            cells.append(text)
        rows.append([label, *cells])
    return render_table(header, rows, markdown)


def failure_table(
    under_failure: Mapping[str, Any],
    titles: Mapping[str, str],
    *,
    lower_is_better: bool,
    markdown: bool = True,
) -> str:
    """Rows = failure settings (a shared p, or the given per-modality rates), columns =
    methods: the expected metric given a decision (mean ± std over seeds, best in bold), and
    the rate of no decision (every sensor failed)."""
    rows_in = under_failure["rows"]
    methods = list(rows_in[0]["methods"])
    header = ["Each sensor fails with", *[titles.get(m, m) for m in methods], "No decision"]
    rows = []
    for row in rows_in:
        stats = row["methods"]
        means = {m: stats[m]["mean"] for m in methods}
        finite = [v for v in means.values() if not math.isnan(v)]
        best = (min if lower_is_better else max)(finite) if finite else math.nan
        show_std = any(len(stats[m]["values"]) > 1 for m in methods)
        cells = []
        for m in methods:
            text = f"{means[m]:.2f}" + (f" ± {stats[m]['std']:.2f}" if show_std else "")
            if markdown and len(methods) > 1 and math.isclose(means[m], best, abs_tol=5e-3):
                text = f"**{text}**"
            cells.append(text)
        rows.append([row["label"], *cells, f"{100 * row['no_decision']:.2f}"])
    return render_table(header, rows, markdown)


def render_table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda row: "  ".join(  # noqa: E731
        cell.ljust(w) if i == 0 else cell.rjust(w)
        for i, (cell, w) in enumerate(zip(row, widths, strict=True))
    )
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *map(fmt, rows)])


def metrics_table(report: Mapping[str, Any], metrics: Sequence[str], markdown: bool = False) -> str:
    """One method's report: rows = combinations + averages (+ "as available" on a split
    with incomplete samples), columns = ``metrics`` (%), and ``N`` — the samples each
    combination was evaluated on — when they differ."""
    combinations = report["combinations"]
    as_available = report.get("as available")
    counts = {values.get("n") for values in combinations.values()}
    with_n = as_available is not None or len(counts) > 1

    def row(label: str, values: Mapping[str, Any]) -> list[str]:
        cells = [label, *[f"{values[m]:.2f}" for m in metrics]]
        return [*cells, str(values["n"])] if with_n and "n" in values else cells

    rows = [row(name, values) for name, values in combinations.items()]
    if as_available is not None:
        rows.append(row("as available", as_available))
    blank = [""] if with_n else []
    rows.append([*row("Single-modality average", report["single_average"]), *blank])
    average = f"Average ({len(combinations)} combinations)"
    rows.append([*row(average, report["average"]), *blank])
    header = ["Combination", *[m.upper() for m in metrics], *(["N"] if with_n else [])]
    return render_table(header, rows, markdown)
