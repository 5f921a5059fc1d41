"""The paper's figures from real runs of a comparison (written next to its tables).

- ``bars.png``: the metric of every method per combination (or per group of combinations
  when there are many), mean over seeds with the std as error bars;
- ``fig4_sp_vs_mad.png`` (paper Fig. 4): the distribution of the normalised two-class
  output of the SP- and the MAD-distilled networks on the evaluation split, pooled over
  every combination, by true class; x = 0.5 is the decision boundary. For two-class data
  the output is the probability of class 1; otherwise it is softmax restricted to the two
  classes the SP network confuses most, p = σ(z_a − z_b);
- ``fig5_warmup.png`` (paper Fig. 5): (a) the training accuracy of each combination over
  MAR's warm-up epochs, (b) the miner's g per drop-one combination per warm-up epoch
  (dashed) and its running average (solid), from MMANet's training log (first seed).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mmanet.config import build_config
from mmanet.data import DataBundle
from mmanet.engine.evaluate import combination_scores
from mmanet.engine.loader import make_loader
from mmanet.methods import get_method
from mmanet.modality import Modalities
from mmanet.registry import TASKS
from mmanet.report import row_groups


def _first(methods: Sequence[str], distill: str, regularize: str) -> str | None:
    """The first method of the comparison with these loss terms."""
    for name in methods:
        method = get_method(name)
        if (method.distill, method.regularize) == (distill, regularize):
            return name
    return None


def write_figures(summary: Mapping[str, Any], out: Path, data: DataBundle) -> list[str]:
    """Every figure the comparison's methods allow; returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    written = [
        bar_chart(summary, out / "bars.png"),
        failure_curve(summary, out / "failure_curve.png", data.modalities),
    ]
    if summary.get("corruptions"):
        from mmanet.corruption_compare import corruption_curves

        titles = summary.get("titles", {})
        written.append(corruption_curves(summary["corruptions"], titles, out / "corruptions.png"))
    seed = summary["seeds"][0]
    runs = out / f"seed-{seed}"
    methods = list(summary["methods"])
    sp, mad = _first(methods, "sp", "none"), _first(methods, "mad", "none")
    if sp and mad and TASKS.get(data.task).sample_scores:
        written.append(
            sp_vs_mad_figure(
                runs / sp, runs / mad, data, summary["split"], out / "fig4_sp_vs_mad.png"
            )
        )
    det = {m: runs / m / f"results_{summary['split']}.json" for m in methods}
    if all(path.is_file() for path in det.values()):
        reports = {m: json.loads(path.read_text()) for m, path in det.items()}
        if all("det" in report for report in reports.values()):
            from mmanet.spoofing_report import write_det_comparison

            titles = summary.get("titles", {})
            written.append(write_det_comparison(reports, titles, out / "det.png"))
    mar = _first(methods, "mad", "mar")
    if mar and (runs / mar / "log.jsonl").is_file():
        written.append(warmup_figure(runs / mar, out / "fig5_warmup.png"))
    return [Path(path).name for path in written]


def bar_chart(summary: Mapping[str, Any], path: Path) -> Path:
    """Grouped bars: rows of the comparison table × methods."""
    import matplotlib.pyplot as plt

    metric, methods = summary["metric"], summary["methods"]
    titles = summary.get("titles", {})
    groups = row_groups(list(next(iter(methods.values()))))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(groups) * len(methods) ** 0.5 + 2), 4))
    for index, (method, results) in enumerate(methods.items()):
        means, stds = [], []
        for _, names in groups:
            per_seed = [
                sum(values) / len(values)
                for values in zip(*(results[n][metric]["values"] for n in names), strict=True)
            ]
            mean = sum(per_seed) / len(per_seed)
            means.append(mean)
            spread = sum((v - mean) ** 2 for v in per_seed) / max(len(per_seed) - 1, 1)
            stds.append(math.sqrt(spread) if len(per_seed) > 1 else 0.0)
        x = [g + (index - (len(methods) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(x, means, width, yerr=stds, label=titles.get(method, method), capsize=2)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([label for label, _ in groups], rotation=30, ha="right", fontsize=8)
    better = "lower" if summary["lower_is_better"] else "higher"
    ax.set_ylabel(f"{metric} (%), {better} is better")
    seeds = summary["seeds"]
    ax.set_title(
        f"{summary['split']} split, seed{'s' if len(seeds) > 1 else ''} "
        f"{', '.join(map(str, seeds))}" + (" (mean ± std)" if len(seeds) > 1 else "")
    )
    ax.legend(fontsize=7, ncol=min(4, len(methods)))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


FAILURE_GRID = tuple(i / 20 for i in range(19))  # every sensor failing with p = 0, ..., 0.9


def failure_curves(
    summary: Mapping[str, Any], modalities: Sequence[str], grid: Sequence[float] = FAILURE_GRID
) -> dict[str, list[list[float]]]:
    """Per method, per seed: the expected metric (given a decision) when every sensor fails
    independently with probability p, for each p of ``grid`` (docs/evaluation.md)."""
    from mmanet.robustness import failure_sweep

    metric, curves = summary["metric"], {}
    for method, results in summary["methods"].items():
        seeds = len(next(iter(results.values()))[metric]["values"])
        curves[method] = [
            [
                expected
                for _, expected, _ in failure_sweep(
                    {name: row[metric]["values"][seed] for name, row in results.items()},
                    modalities,
                    grid,
                )
            ]
            for seed in range(seeds)
        ]
    return curves


def failure_curve(summary: Mapping[str, Any], path: Path, modalities: Sequence[str]) -> Path:
    """Each method's expected metric against a shared sensor failure rate p (mean over the
    seeds, ± std shaded), and the rate of no decision, p^m: which method is best at which
    failure rate."""
    import matplotlib.pyplot as plt

    titles = summary.get("titles", {})
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for method, per_seed in failure_curves(summary, modalities).items():
        means = [sum(v) / len(v) for v in zip(*per_seed, strict=True)]
        stds = [
            math.sqrt(sum((x - m) ** 2 for x in v) / max(len(v) - 1, 1)) if len(v) > 1 else 0.0
            for v, m in zip(zip(*per_seed, strict=True), means, strict=True)
        ]
        ax.plot(FAILURE_GRID, means, label=titles.get(method, method))
        low = [m - s for m, s in zip(means, stds, strict=True)]
        high = [m + s for m, s in zip(means, stds, strict=True)]
        ax.fill_between(FAILURE_GRID, low, high, alpha=0.15)
    better = "lower" if summary["lower_is_better"] else "higher"
    ax.set_xlabel("p: every sensor fails independently with this probability")
    ax.set_ylabel(f"expected {summary['metric']} (%), given a decision; {better} is better")
    empty = ax.twinx()
    empty.plot(FAILURE_GRID, [100 * p ** len(modalities) for p in FAILURE_GRID], "k:", lw=1)
    empty.set_ylabel("no decision (every sensor failed), % (dotted)")
    ax.set_title(f"Under sensor failure ({summary['split']} split)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def two_class_outputs(
    run: Path, data: DataBundle, split: str, classes: tuple[int, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """The normalised two-class output and true class (0 = first, 1 = second) of every
    (combination, sample) pair of the two classes, from the run's latest checkpoint."""
    from mmanet.engine import load_network

    config = build_config(run / "config.yaml")
    model, _ = load_network(run, modalities=data.modalities)
    loader = make_loader(data.split(split), config.data.eval_batch_size, num_workers=0)
    masks = Modalities(data.modalities).combinations
    with torch.no_grad():
        scores, labels, _ = combination_scores(model, loader, masks)  # (c, n, k), (n,)
    if classes is None:
        classes = most_confused_pair(scores, labels) if scores.shape[2] > 2 else (0, 1)
    a, b = classes
    keep = (labels == a) | (labels == b)
    chosen = scores[:, keep]
    output = chosen[..., b] / (chosen[..., a] + chosen[..., b]).clamp_min(1e-12)
    truth = (labels[keep] == b).long().expand(len(masks), -1)
    return output.flatten(), truth.flatten(), classes


def most_confused_pair(scores: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """The two classes most often predicted as each other, over every combination."""
    k = scores.shape[2]
    predictions = scores.argmax(dim=2)
    pairs = labels.expand_as(predictions) * k + predictions
    confusion = torch.bincount(pairs.flatten(), minlength=k * k).view(k, k).float()
    symmetric = confusion + confusion.T
    symmetric.fill_diagonal_(-1)
    index = int(symmetric.argmax())
    first, second = sorted((index // k, index % k))
    return first, second


def sp_vs_mad_figure(sp_run: Path, mad_run: Path, data: DataBundle, split: str, path: Path) -> Path:
    """Paper Fig. 4: histograms of the normalised output by true class, SP | MAD."""
    import matplotlib.pyplot as plt

    sp_output, sp_truth, classes = two_class_outputs(sp_run, data, split)
    mad_output, mad_truth, _ = two_class_outputs(mad_run, data, split, classes)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    names = [data.class_names[c] for c in classes]
    for ax, title, output, truth in (
        (axes[0], "SF-MD + SP", sp_output, sp_truth),
        (axes[1], "SF-MD + MAD", mad_output, mad_truth),
    ):
        for value, colour in ((0, "tab:blue"), (1, "tab:orange")):
            ax.hist(
                output[truth == value].numpy(),
                bins=40,
                range=(0, 1),
                alpha=0.6,
                color=colour,
                label=f"class {names[value]}",
            )
        wrong = float(((output >= 0.5).long() != truth).float().mean())
        margin = float((output - 0.5).abs().mean())
        ax.axvline(0.5, color="black", linewidth=0.8)
        ax.set_title(f"{title}\n{100 * wrong:.1f}% on the wrong side, mean |p − 0.5| {margin:.3f}")
        ax.set_xlabel("normalised output p")
        ax.set_yscale("log")  # the confident bins would otherwise hide the boundary region
    axes[0].set_ylabel("(combination, sample) pairs")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def read_log(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line]


def warmup_figure(run: Path, path: Path, max_lines: int = 16) -> Path:
    """Paper Fig. 5 from MMANet's log: (a) training accuracy per combination over the
    warm-up epochs, (b) g per drop-one combination and its running average."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = [row for row in read_log(run) if any(k.startswith("mar_g/") for k in row)]
    epochs = [row["epoch"] for row in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    accuracy_keys = [k for k in rows[0] if k.startswith("train_acc/")] if rows else []
    if len(accuracy_keys) > max_lines:  # many modalities: the full, drop-one and single ones
        sizes = {k: k.count("+") + 1 for k in accuracy_keys}
        top = max(sizes.values())
        accuracy_keys = [k for k in accuracy_keys if sizes[k] in (1, top - 1, top)]
    for key in accuracy_keys:
        left.plot(epochs, [row[key] for row in rows], marker="o", label=key.split("/", 1)[1])
    left.set_xlabel("warm-up epoch")
    left.set_ylabel("training accuracy (%)")
    left.set_title("(a) learning of each combination")
    left.legend(fontsize=6, ncol=2)
    for key in [k for k in (rows[0] if rows else {}) if k.startswith("mar_g/")]:
        values = [row[key] for row in rows]
        running = [sum(values[: i + 1]) / (i + 1) for i in range(len(values))]
        (line,) = right.plot(epochs, values, linestyle="--", marker="o")
        right.plot(epochs, running, color=line.get_color(), label=f"without {key.split('/')[1]}")
    right.set_yscale("log")
    for axis in (left, right):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_xlabel("warm-up epoch")
    right.set_ylabel("g (dashed) and its running mean (solid)")
    right.set_title("(b) discrepancy g of the drop-one combinations")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__: Sequence[str] = [
    "bar_chart",
    "failure_curve",
    "failure_curves",
    "sp_vs_mad_figure",
    "warmup_figure",
    "write_figures",
]
