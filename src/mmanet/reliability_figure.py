"""What ``mmanet evaluate`` shows of an evaluation's calibration (the report's
``"calibration"`` section and each combination's ``ece``, ``confidence_rises`` and
``reliability``, see :func:`mmanet.calibration.calibration_per_mask`): a table and
``<evaluation>-reliability.png``.

The figure has one reliability diagram per combination (and one for "as available" on a
split with incomplete samples) when there are at most 16 combinations; with more, one for
the full combination, one per single modality and one for the rest pooled (their bins'
counts summed, confidence and accuracy weighted by the counts). Each diagram shows the
accuracy of every confidence bin as a bar, the bin's mean confidence as a dot, the
diagonal of perfect calibration and the panel's ECE.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmanet.calibration import ReliabilityBin, ece_of_bins
from mmanet.report import render_table, row_groups
from mmanet.tasks.base import AS_AVAILABLE

MAX_PANELS = 16  # more combinations than this: the full one, the singles, the rest pooled


def calibration_table(report: Mapping[str, Any], max_rows: int = 16) -> str:
    """Rows: the combinations, or for many of them one row per number of modalities (as
    the comparison tables group them), the averages and "as available"; columns: ECE (%)
    and the share of pairs whose confidence rose when a modality was removed (%, "-" where
    a row has none: a single modality, "as available"). A grouped or average row is the
    mean of its combinations' values that are defined (so the average of the rises is
    over the combinations of two or more modalities)."""
    combinations = report["combinations"]
    rows = []
    for label, names in row_groups(list(combinations), max_rows):
        rows.append(
            [
                label,
                _cell(_mean(combinations[n]["ece"] for n in names)),
                _cell(_mean(combinations[n]["confidence_rises"] for n in names)),
            ]
        )
    as_available = report.get(AS_AVAILABLE)
    if as_available is not None and "ece" in as_available:
        rows.append([AS_AVAILABLE, _cell(as_available["ece"]), "-"])
    return render_table(["Combination", "ECE", "CONFIDENCE RISES"], rows, markdown=False)


def calibration_summary(section: Mapping[str, Any]) -> str:
    """One line: the share of all pairs whose confidence rose, with its counts."""
    share = section["confidence_rises"]
    value = "-" if share is None else f"{share:.2f} %"
    return (
        f"confidence rises when a modality is removed in {value} of the (sample, combination "
        f"-> one modality fewer) pairs ({section['violations']} of {section['pairs']}); "
        f"ECE over {section['bins']} equal-width bins"
    )


def print_calibration(
    report: Mapping[str, Any], evaluation: Path, figures: bool = True
) -> Path | None:
    """Print the calibration table and summary of an evaluation report (nothing for a task
    that reports none) and, with ``figures``, write the reliability diagrams next to the
    evaluation file ``evaluation``; returns the figure's path (None: none written)."""
    section = report.get("calibration")
    if section is None:
        return None
    print("\ncalibration (%):")
    print(calibration_table(report))
    print(calibration_summary(section))
    if not figures:
        return None
    path = reliability_figure(report, figure_path(evaluation))
    print(f"reliability diagrams: {path}")
    return path


def figure_path(evaluation: Path) -> Path:
    """``<evaluation json stem>-reliability.png`` next to the evaluation file."""
    return evaluation.with_name(f"{evaluation.stem}-reliability.png")


def panels(report: Mapping[str, Any]) -> list[tuple[str, dict[str, list[Any]]]]:
    """(title, reliability bins) of each diagram of :func:`reliability_figure`."""
    combinations = report["combinations"]
    names = list(combinations)
    if len(names) <= MAX_PANELS:
        chosen = [(name, combinations[name]["reliability"]) for name in names]
    else:
        full = max(names, key=lambda name: name.count("+"))
        singles = [name for name in names if "+" not in name]
        rest = [name for name in names if name != full and name not in singles]
        chosen = [(name, combinations[name]["reliability"]) for name in [full, *singles]]
        pooled = pool([combinations[name]["reliability"] for name in rest])
        chosen.append((f"the other {len(rest)} pooled", pooled))
    as_available = report.get(AS_AVAILABLE)
    if as_available is not None and "reliability" in as_available:
        chosen.append((AS_AVAILABLE, as_available["reliability"]))
    return chosen


def pool(diagrams: Sequence[Mapping[str, Sequence[Any]]]) -> dict[str, list[Any]]:
    """Several diagrams' bins as one: counts summed, confidence and accuracy the
    count-weighted means (None for a bin empty in all)."""
    bins = len(diagrams[0]["count"])
    out: dict[str, list[Any]] = {"count": [], "confidence": [], "accuracy": []}
    for b in range(bins):
        count = sum(d["count"][b] for d in diagrams)
        out["count"].append(count)
        for key in ("confidence", "accuracy"):
            total = sum(d["count"][b] * d[key][b] for d in diagrams if d["count"][b])
            out[key].append(total / count if count else None)
    return out


def ece_of(diagram: Mapping[str, Sequence[Any]]) -> float:
    """ECE (%) of a diagram's bins as the report stores them (NaN when empty)."""
    m = len(diagram["count"])
    bins = [
        ReliabilityBin(
            lower=b / m,
            upper=(b + 1) / m,
            count=count,
            confidence=confidence if count else math.nan,
            accuracy=accuracy if count else math.nan,
        )
        for b, (count, confidence, accuracy) in enumerate(
            zip(diagram["count"], diagram["confidence"], diagram["accuracy"], strict=True)
        )
    ]
    return ece_of_bins(bins)


def reliability_figure(report: Mapping[str, Any], path: Path) -> Path:
    """The reliability diagrams of :func:`panels` in one PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = panels(report)
    columns = min(4, len(chosen))
    rows = math.ceil(len(chosen) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(2.6 * columns, 2.6 * rows), squeeze=False, sharex=True, sharey=True
    )
    for ax in axes.flat[len(chosen) :]:
        ax.axis("off")
    for ax, (title, diagram) in zip(axes.flat, chosen, strict=False):
        bins = len(diagram["count"])
        width = 1.0 / bins
        centres = [(b + 0.5) * width for b in range(bins)]
        accuracy = [a if a is not None else 0.0 for a in diagram["accuracy"]]
        ax.bar(centres, accuracy, width=width, edgecolor="black", linewidth=0.4, color="C0")
        counts, confidence = diagram["count"], diagram["confidence"]
        filled = [(x, f) for x, f, c in zip(centres, confidence, counts, strict=True) if c]
        if filled:
            ax.plot([x for x, _ in filled], [f for _, f in filled], "o", color="C3", markersize=3)
        ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{title}\nECE {ece_of(diagram):.2f} %", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("confidence", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy", fontsize=8)
    fig.suptitle("bars: accuracy per bin; dots: mean confidence", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _mean(values: Any) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def _cell(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


__all__ = [
    "calibration_summary",
    "calibration_table",
    "figure_path",
    "panels",
    "pool",
    "print_calibration",
    "reliability_figure",
]
