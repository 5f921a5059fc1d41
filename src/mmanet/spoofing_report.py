"""Anti-spoofing operating points in a report: exact threshold counts at scale, the DET
points kept in the evaluation JSON, the printed table (its header states the threshold) and
the DET figure (docs/evaluation.md#anti-spoofing-operating-points).

The definitions and their counts are those of :mod:`mmanet.operating_points` (a sample is
accepted as bona fide iff its score >= the threshold; candidates are the distinct scores
and the float just above the largest; counted by binary search over the sorted scores, so
a test split of 10^5 samples, or the validation scores of every combination pooled, fit in
memory). :func:`fast_eer_threshold` and :func:`fast_threshold_at_apcer` are its thresholds
with NaN for a split that lacks a class.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mmanet.operating_points import ArrayLike, candidate_counts
from mmanet.tasks.base import AS_AVAILABLE

# the operating points set on validation: the EER and two target APCERs (in %)
TARGETS = {"apcer_5": 5.0, "apcer_1": 1.0}
POINTS = ("val_eer", *TARGETS)
DET_MAX_POINTS = 500  # the DET points kept per combination in the evaluation JSON
ONE_CLASS_FLAGS = {"attack": "all attack", "bona_fide": "all bona fide"}
SECTION = "operating_points"  # the report section of the thresholds and the global point
DET_SECTION = "det"  # the report section of the DET points per combination


def _class_counts(labels: ArrayLike, bona_fide_class: int) -> tuple[int, int]:
    """(attacks, bona fide samples) among ``labels``."""
    flat = torch.as_tensor(labels).reshape(-1)
    genuine = int((flat == bona_fide_class).sum())
    return len(flat) - genuine, genuine


def fast_eer_threshold(scores: ArrayLike, labels: ArrayLike, bona_fide_class: int) -> float:
    """:func:`~mmanet.operating_points.eer_threshold`, NaN without both classes."""
    from mmanet.operating_points import eer_threshold

    attacks, genuine = _class_counts(labels, bona_fide_class)
    return eer_threshold(scores, labels, bona_fide_class) if attacks and genuine else math.nan


def fast_threshold_at_apcer(
    scores: ArrayLike, labels: ArrayLike, bona_fide_class: int, target_apcer: float
) -> float:
    """:func:`~mmanet.operating_points.threshold_at_apcer`, NaN without attacks."""
    from mmanet.operating_points import threshold_at_apcer

    attacks, _ = _class_counts(labels, bona_fide_class)
    if not attacks:
        return math.nan
    return threshold_at_apcer(scores, labels, bona_fide_class, target_apcer)


def validation_thresholds(
    scores: ArrayLike, labels: ArrayLike, bona_fide_class: int
) -> dict[str, float]:
    """``{"val_eer": t, "apcer_5": t, "apcer_1": t}`` set on validation scores
    (:data:`POINTS`; NaN where the split lacks a class the point needs)."""
    return {
        "val_eer": fast_eer_threshold(scores, labels, bona_fide_class),
        **{
            key: fast_threshold_at_apcer(scores, labels, bona_fide_class, target)
            for key, target in TARGETS.items()
        },
    }


def det_points(
    scores: ArrayLike, labels: ArrayLike, bona_fide_class: int, max_points: int = DET_MAX_POINTS
) -> list[list[float]]:
    """``[[t, APCER(t), BPCER(t)], ...]`` as :func:`~mmanet.operating_points.det_curve`
    (every candidate moves at least one sample across, so no two points repeat), at most
    ``max_points`` of them kept, evenly spaced (the first and last always)."""
    candidates, accepted, rejected, attacks, genuine = candidate_counts(
        scores, labels, bona_fide_class
    )
    points = [
        [t, _percent(a, attacks), _percent(r, genuine)]
        for t, a, r in zip(candidates.tolist(), accepted.tolist(), rejected.tolist(), strict=True)
    ]
    if len(points) > max_points:
        step = (len(points) - 1) / (max_points - 1)
        points = [points[round(i * step)] for i in range(max_points)]
    return points


def _percent(count: int, total: int) -> float:
    return 100.0 * count / total if total else math.nan


# -- the printed table ------------------------------------------------------------------


def threshold_header(threshold: float | str) -> str:
    """The line above the table: which threshold its ACER/APCER/BPCER are at."""
    if threshold == "val_eer":
        at = "at the validation EER threshold of each combination"
    else:
        at = f"at the fixed threshold {float(threshold):g}"
    return (
        f"ACER/APCER/BPCER {at}; HTER at the validation EER threshold; "
        "BPCER@APCER=5 %/1 % at the thresholds set on validation (test, %)"
    )


def operating_points_table(report: Mapping[str, Any]) -> str:
    """The anti-spoofing table of a report with an ``operating_points`` section: the
    header line, then rows = combinations (+ "as available") + averages, columns ACER,
    APCER, BPCER, HTER, BPCER@APCER=5 %, =1 % (the worst attack type's APCER when the
    data names attack types; N when the counts differ) and a flag for a combination whose
    every test sample falls on one side of its threshold (its ACER in parentheses: not a
    detector's result; the column only when there is one)."""
    from mmanet.report import render_table

    section = report[SECTION]
    combinations = report["combinations"]
    as_available = report.get(AS_AVAILABLE)
    rows_in = dict(combinations)
    if as_available is not None:
        rows_in[AS_AVAILABLE] = as_available
    typed = any("worst_attack_apcer" in values for values in rows_in.values())
    counts = {values.get("n") for values in combinations.values()}
    with_n = as_available is not None or len(counts) > 1
    columns = ["acer", "apcer", "bpcer", "hter", "bpcer_at_apcer_5", "bpcer_at_apcer_1"]
    titles = ["ACER", "APCER", "BPCER", "HTER", "BPCER@APCER=5%", "BPCER@APCER=1%"]
    if typed:
        columns.append("worst_attack_apcer")
        titles.append("WORST-TYPE APCER")

    def row(label: str, values: Mapping[str, Any], flag: str) -> list[str]:
        cells = [label]
        for column in columns:
            value = values.get(column, math.nan)
            text = f"{value:.2f}" if isinstance(value, (int, float)) else "-"
            if column == "acer" and flag.startswith("all "):
                text = f"({text})"
            if column == "worst_attack_apcer" and values.get("worst_attack") is not None:
                text += f" ({values['worst_attack']})"
            cells.append(text)
        if with_n:
            cells.append(str(values["n"]) if "n" in values else "")
        return [*cells, flag]

    rows = []
    one_class = 0
    for name, values in rows_in.items():
        flag = ONE_CLASS_FLAGS.get(values.get("one_class") or "", "")
        one_class += bool(flag) and name != AS_AVAILABLE
        rows.append(row(name, values, flag))
    average_flag = f"{one_class} one-class" if one_class else ""
    rows.append(row("Single-modality average", report["single_average"], average_flag))
    rows.append(row(f"Average ({len(combinations)} combinations)", report["average"], average_flag))
    header = ["Combination", *titles, *(["N"] if with_n else []), "FLAG"]
    flagged = any(r[-1] for r in rows)
    if not flagged:  # no one-class combination: no flag column
        header, rows = header[:-1], [r[:-1] for r in rows]
    lines = [threshold_header(section["threshold"]), render_table(header, rows, False)]
    if flagged:
        lines.append(
            "(ACER): one-class combination, every test sample on one side of its threshold; "
            "not a detector's result"
        )
    return "\n".join(lines)


# -- the DET figure ---------------------------------------------------------------------

_TICKS = [0.1, 0.5, 1, 2, 5, 10, 20, 40, 60, 80, 95, 99]
_CLIP = (0.05, 99.95)  # % kept on the normal-deviate axes (0 and 100 are at infinity)
_MARKERS = {"val_eer": "o", "apcer_5": "s", "apcer_1": "^"}
_LABELS = {"val_eer": "val EER threshold", "apcer_5": "val APCER=5 %", "apcer_1": "val APCER=1 %"}


def _deviate(percent: float) -> float:
    from statistics import NormalDist

    p = min(max(percent, _CLIP[0]), _CLIP[1]) / 100
    return NormalDist().inv_cdf(p)


def _draw_curve(ax: Any, label: str, curve: Mapping[str, Any], colour: Any) -> None:
    """One DET curve on normal-deviate axes, its validation operating points marked."""
    points = [p for p in curve["points"] if not (math.isnan(p[1]) or math.isnan(p[2]))]
    if not points:
        return
    xs = [_deviate(p[1]) for p in points]
    ys = [_deviate(p[2]) for p in points]
    ax.plot(xs, ys, color=colour, linewidth=1.2, label=label)
    for point, (apcer, bpcer) in curve["marked"].items():
        if apcer is None or bpcer is None or math.isnan(apcer) or math.isnan(bpcer):
            continue
        ax.plot(
            _deviate(apcer),
            _deviate(bpcer),
            marker=_MARKERS[point],
            color=colour,
            markersize=6,
            linestyle="none",
        )


def _det_axes(ax: Any, title: str, ticks: Sequence[float] = _TICKS) -> None:
    """Normal-deviate (probit) axes in %, APCER across and BPCER up."""
    positions = [_deviate(t) for t in ticks]
    labels = [f"{t:g}" for t in ticks]
    ax.set_xticks(positions, labels)
    ax.set_yticks(positions, labels)
    limits = (_deviate(_CLIP[0]), _deviate(_CLIP[1]))
    ax.set_xlim(*limits)
    ax.set_ylim(*limits)
    ax.set_xlabel("APCER (%, attacks accepted)")
    ax.set_ylabel("BPCER (%, bona fide rejected)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)


def _marker_legend(ax: Any) -> None:
    for point, marker in _MARKERS.items():
        ax.plot([], [], marker=marker, color="black", linestyle="none", label=_LABELS[point])


def write_det_figure(report: Mapping[str, Any], path: Path) -> Path:
    """The DET curves of a report's ``det`` section: APCER (x) against BPCER (y) on the
    test split, both on a normal-deviate (probit) scale, one line per combination, its
    operating points set on validation marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 6.0))
    colours = plt.get_cmap("tab10")
    for index, (name, curve) in enumerate(report[DET_SECTION].items()):
        _draw_curve(ax, name, curve, colours(index % 10))
    _marker_legend(ax)
    _det_axes(ax, f"DET on the {report.get('split', 'test')} split (normal-deviate scale)")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_det_comparison(
    reports: Mapping[str, Mapping[str, Any]], titles: Mapping[str, str], path: Path
) -> Path:
    """A comparison's DET curves: one panel per combination, one line per method (each
    method's report of one seed), the validation operating points marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    combinations = list(next(iter(reports.values()))[DET_SECTION])
    per_row = min(len(combinations), 4)
    lines = (len(combinations) + per_row - 1) // per_row
    fig, axes = plt.subplots(lines, per_row, figsize=(3.6 * per_row, 3.6 * lines), squeeze=False)
    for ax in axes.flat[len(combinations) :]:
        ax.set_visible(False)
    colours = plt.get_cmap("tab10")
    coarse = [0.1, 1, 5, 20, 50, 80, 99]
    for ax, name in zip(axes.flat, combinations, strict=False):
        for index, (method, report) in enumerate(reports.items()):
            _draw_curve(ax, titles.get(method, method), report[DET_SECTION][name], colours(index))
        _det_axes(ax, name, coarse)
    _marker_legend(axes.flat[0])
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 7), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = [
    "DET_SECTION",
    "POINTS",
    "SECTION",
    "TARGETS",
    "candidate_counts",
    "det_points",
    "fast_eer_threshold",
    "fast_threshold_at_apcer",
    "operating_points_table",
    "threshold_header",
    "validation_thresholds",
    "write_det_comparison",
    "write_det_figure",
]
