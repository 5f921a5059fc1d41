"""Evaluation under corrupted inputs: every modality combination of a model on a split whose
inputs are corrupted (:mod:`mmanet.corruptions`), per corruption, target modality and
severity; ``mmanet evaluate --corrupt`` and ``mmanet compare`` call
:func:`evaluate_corruptions`.

Each (corruption, severity) is one pass over the split: one encoder pass per batch, every
combination fused from it (:class:`mmanet.engine.evaluate.ModelPasses` with ``corrupt``).
The clean split is evaluated once, first; that pass also measures each modality's
per-channel standard deviation, which scales the signal corruptions (``noise``).

Only the evaluated split is corrupted: a task that calibrates on the validation split
(anti-spoofing with ``threshold=val_eer``) calibrates on the clean one, computed once and
reused for every corruption (a threshold is fixed before deployment).

Error: for a metric where higher is better ("max", e.g. mIoU, accuracy) the error is
``100 − value``; for one where lower is better ("min", error, ACER) it is the value.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mmanet.corruptions import (
    ALL,
    CorruptionSpec,
    CorruptionTarget,
    Domain,
    apply_corruption,
    resolve_specs,
    stream_seed,
)

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from mmanet.data import DataBundle
    from mmanet.modality import Mask
    from mmanet.models import UnifiedNetwork
    from mmanet.tasks import Task

SINGLE_AVERAGE = "single-modality average"
AVERAGE = "average"


def data_domains(data: DataBundle, channel_std: Mapping[str, torch.Tensor] | None = None):
    """Each modality's :class:`Domain` (its pixel range from ``data.pixel_ranges``, its
    channels' std when measured) and its batches' number of dimensions."""
    ranges = getattr(data, "pixel_ranges", None) or {}
    std = channel_std or {}
    domains = {m: Domain(m, ranges.get(m), std.get(m)) for m in data.modalities}
    ndims = {m: len(data.input_shapes[m]) + 1 for m in data.modalities}
    return domains, ndims


def corruption_targets(
    data: DataBundle, specs: Sequence[str | CorruptionSpec]
) -> list[CorruptionTarget]:
    """What ``specs`` (``name[:severity][@modality]``, or ``all``) corrupt on ``data``; a bad
    spec is a one-line ConfigError (check them before a long evaluation)."""
    domains, ndims = data_domains(data)
    return resolve_specs(list(specs), domains, ndims)


class ChannelStats:
    """A pass's ``corrupt`` that leaves the inputs as they are and measures each modality's
    per-channel (dim 1) mean and standard deviation over every value of the split."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.squares: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def __call__(self, inputs: dict[str, torch.Tensor], batch: int) -> dict[str, torch.Tensor]:
        for name, x in inputs.items():
            values = x.detach().double()
            values = values.reshape(len(x), -1, 1) if x.ndim <= 2 else values.flatten(2)
            values = values.transpose(0, 1).reshape(values.shape[1], -1)  # (c, everything)
            if name not in self.sums:
                self.sums[name] = torch.zeros(values.shape[0], dtype=torch.float64)
                self.squares[name] = torch.zeros(values.shape[0], dtype=torch.float64)
                self.counts[name] = 0
            self.sums[name] += values.sum(dim=1).cpu()
            self.squares[name] += (values**2).sum(dim=1).cpu()
            self.counts[name] += values.shape[1]
        return inputs

    def std(self) -> dict[str, torch.Tensor]:
        """(c,) population standard deviation of each modality's channels."""
        out = {}
        for name, total in self.sums.items():
            n = max(self.counts[name], 1)
            mean = total / n
            out[name] = (self.squares[name] / n - mean**2).clamp_min(0).sqrt().float()
        return out


class BatchCorruption:
    """A pass's ``corrupt``: ``target`` at ``severity`` on each batch, every modality of it
    from its own generator (:func:`mmanet.corruptions.stream_seed`)."""

    def __init__(
        self, target: CorruptionTarget, severity: int, seed: int, domains: Mapping[str, Domain]
    ) -> None:
        self.target, self.severity, self.seed, self.domains = target, severity, seed, domains

    def __call__(self, inputs: dict[str, torch.Tensor], batch: int) -> dict[str, torch.Tensor]:
        out = dict(inputs)
        for modality in self.target.modalities:
            if modality not in out:
                continue
            key = stream_seed(self.seed, self.target.name, modality, self.severity, batch)
            generator = torch.Generator().manual_seed(key)
            out[modality] = apply_corruption(
                self.target.name, out[modality], self.severity, generator, self.domains[modality]
            )
        return out


class TrainingCorruption:
    """Corruption as training augmentation (``data.corrupt``, :func:`training_corruption`):
    each batch, with probability ``p``, one of ``targets`` (drawn uniformly) at one of its
    severities (drawn uniformly, 0 left out) on its modalities. Every draw comes from (seed, epoch,
    step), so a resumed run corrupts its batches as an uninterrupted one does.

    Args:
        targets: what may corrupt a batch (:func:`corruption_targets`).
        p: the probability that a batch is corrupted.
        seed: the draws' seed.
        domains: each modality's :class:`Domain` (:func:`data_domains`; without a measured
            std the signal noise is in units of 1: standardised data).
    """

    def __init__(
        self,
        targets: Sequence[CorruptionTarget],
        p: float,
        seed: int,
        domains: Mapping[str, Domain],
    ) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"a corruption probability is in [0, 1], got {p}")
        self.targets = [t for t in targets if any(s > 0 for s in t.severities)]
        self.p, self.seed, self.domains = p, seed, domains

    def __call__(
        self, inputs: dict[str, torch.Tensor], epoch: int, step: int
    ) -> dict[str, torch.Tensor]:
        if not self.targets or self.p == 0.0:
            return inputs
        draw = torch.Generator().manual_seed(stream_seed(self.seed, "train", "", epoch, step))
        if float(torch.rand((), generator=draw)) >= self.p:
            return inputs
        target = self.targets[int(torch.randint(len(self.targets), (), generator=draw))]
        severities = [s for s in target.severities if s > 0]
        severity = severities[int(torch.randint(len(severities), (), generator=draw))]
        batch = int(torch.randint(2**31 - 1, (), generator=draw))  # the stream of this step
        return BatchCorruption(target, severity, self.seed, self.domains)(inputs, batch)


def training_corruption(data: DataBundle, cfg: Any, seed: int) -> TrainingCorruption:
    """The trainer's corruption of its batches: ``cfg.corrupt`` (``data.corrupt`` specs),
    each batch with probability ``cfg.corrupt_rate``; a bad spec is a one-line ConfigError
    naming ``data.corrupt``. The signal corruptions are in units of 1 (no split is measured
    before training: standardised data's units)."""
    from mmanet.errors import ConfigError

    try:
        targets = corruption_targets(data, cfg.corrupt)
    except ConfigError as err:
        raise ConfigError(f"data.corrupt: {err}") from None
    domains, _ = data_domains(data)
    return TrainingCorruption(targets, cfg.corrupt_rate, seed, domains)


class _TargetPasses:
    """The passes a task's ``evaluate`` gets: ``target`` (the evaluated split's loader)
    through ``corrupted``; any other loader (the calibration split) clean, computed once
    per loader and masks and kept in ``cache``."""

    def __init__(self, corrupted: Any, clean: Any, target: DataLoader, cache: dict) -> None:
        self.corrupted, self.clean, self.target, self.cache = corrupted, clean, target, cache

    def counts(
        self, loader: DataLoader, masks: Sequence[Mask | None], task: Task
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if loader is self.target:
            return self.corrupted.counts(loader, masks, task)
        key = ("counts", id(loader), repr(list(masks)))
        if key not in self.cache:
            self.cache[key] = self.clean.counts(loader, masks, task)
        return self.cache[key]

    def scores(
        self, loader: DataLoader, masks: Sequence[Mask | None]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if loader is self.target:
            return self.corrupted.scores(loader, masks)
        key = ("scores", id(loader), repr(list(masks)))
        if key not in self.cache:
            self.cache[key] = self.clean.scores(loader, masks)
        return self.cache[key]


def error_of(value: float, lower_is_better: bool) -> float:
    """The error of a metric's value: itself when lower is better, else 100 − value."""
    return value if lower_is_better else 100.0 - value


def evaluate_corruptions(
    model: UnifiedNetwork,
    data: DataBundle,
    task: Task,
    specs: Sequence[str | CorruptionSpec],
    split: str = "test",
    device: torch.device | str = "cpu",
    batch_size: int = 512,
    num_workers: int = 0,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Every combination of ``model`` on ``split`` of ``data``, clean and under each
    corruption of ``specs`` (``name[:severity][@modality]``, ``all``; see
    :func:`mmanet.corruptions.parse_spec`) at each of its severities.

    Returns the JSON-ready section an evaluation report holds under ``"corruptions"``::

        {"metric": the task's default metric, "lower_is_better": bool,
         "error_form": "value" (lower is better) or "100 - value",
         "seed": seed, "split": split, "specs": [as given],
         "full": the all-modality combination, "clean": {combination: value},
         "clean_average": mean over combinations, "clean_error": its error,
         "results": [{"corruption", "modality" (one, or "all"), "label"
                      ("name@modality" / "name"), "severity",
                      "combinations": {combination: value}, "average": mean over them}],
         "summary": {label: {"corruption", "modality", "errors": {severity: error of the
                     average}, "mean_error": mean over the severities,
                     "degradation": mean over them of (E_s − E_clean), in points}},
         "mean_degradation": mean over the labels' degradations}

    ``model`` is evaluated in eval mode; batches are never shuffled, so the corruption of
    each batch depends on (seed, corruption, modality, severity, batch index): the same
    arguments give the same numbers. A bad spec is a one-line ConfigError before any
    evaluation. ``progress``: a bar over the (corruption, severity) passes."""
    from tqdm import tqdm

    from mmanet.engine.evaluate import ModelPasses
    from mmanet.engine.loader import make_loader
    from mmanet.progress import show_progress
    from mmanet.tasks.base import Evaluated

    targets = corruption_targets(data, specs)
    metric = task.default_metric
    lower = task.lower_is_better(metric)
    masks: list[Mask | None] = list(model.modalities.combinations)
    names = [model.modalities.mask_name(mask) for mask in masks]  # type: ignore[arg-type]
    loader = make_loader(data.split(split), batch_size, num_workers)  # never shuffled
    calibration = make_loader(data.val, batch_size, num_workers)
    clean_passes = ModelPasses(model, device)
    cache: dict = {}

    def run(corrupt: Callable[[dict[str, torch.Tensor], int], dict[str, torch.Tensor]]):
        passes = _TargetPasses(
            ModelPasses(model, device, corrupt=corrupt), clean_passes, loader, cache
        )
        results = task.evaluate(passes, loader, masks, calibration)
        if isinstance(results, Evaluated):
            results = results.per_mask
        return {name: float(row[metric]) for name, row in zip(names, results, strict=True)}

    stats = ChannelStats()
    clean = run(stats)
    domains, _ = data_domains(data, stats.std())
    clean_average = statistics.fmean(clean.values())
    clean_error = error_of(clean_average, lower)
    results: list[dict[str, Any]] = []
    summary: dict[str, dict[str, Any]] = {}
    total = sum(len(t.severities) for t in targets)
    with tqdm(
        total=total,
        desc="corruptions",
        unit="pass",
        disable=not show_progress(progress),
        dynamic_ncols=True,
    ) as bar:
        for target in targets:
            errors: dict[str, float] = {}
            for severity in target.severities:
                bar.set_postfix_str(f"{target.label}:{severity}")
                values = run(BatchCorruption(target, severity, seed, domains))
                average = statistics.fmean(values.values())
                results.append(
                    {
                        "corruption": target.name,
                        "modality": target.modality,
                        "label": target.label,
                        "severity": severity,
                        "combinations": values,
                        "average": average,
                    }
                )
                errors[str(severity)] = error_of(average, lower)
                bar.update(1)
            mean_error = statistics.fmean(errors.values())
            summary[target.label] = {
                "corruption": target.name,
                "modality": target.modality,
                "errors": errors,
                "mean_error": mean_error,
                "degradation": mean_error - clean_error,
            }
    degradations = [row["degradation"] for row in summary.values()]
    return {
        "metric": metric,
        "lower_is_better": lower,
        "error_form": "value" if lower else "100 - value",
        "seed": seed,
        "split": split,
        "specs": [s if isinstance(s, str) else s.text for s in specs],
        "full": names[-1],
        "clean": clean,
        "clean_average": clean_average,
        "clean_error": clean_error,
        "results": results,
        "summary": summary,
        "mean_degradation": statistics.fmean(degradations) if degradations else 0.0,
    }


# -- the table and the figure ----------------------------------------------------------------


def columns(section: Mapping[str, Any], max_every: int = 7) -> list[tuple[str, list[str]]]:
    """The table's columns (and the figure's lines): every combination and the average
    when there are at most ``max_every``, else the full combination, the single-modality
    average and the average over every combination; each ``(title, its combinations)``."""
    names = list(section["clean"])
    if len(names) <= max_every:
        every = [(name, [name]) for name in names]
        return [*every, (AVERAGE, names)] if len(names) > 1 else every
    singles = [name for name in names if "+" not in name]
    full = section.get("full", names[-1])
    return [(full, [full]), (SINGLE_AVERAGE, singles), (AVERAGE, names)]


def _rows(section: Mapping[str, Any]) -> dict[str, dict[int, Mapping[str, float]]]:
    """label -> severity -> {combination: value}, severity 0 being the clean values."""
    rows: dict[str, dict[int, Mapping[str, float]]] = {}
    for result in section["results"]:
        row = rows.setdefault(result["label"], {0: section["clean"]})
        row[int(result["severity"])] = result["combinations"]
    return rows


def _mean(values: Mapping[str, float], members: Sequence[str]) -> float:
    return statistics.fmean(values[name] for name in members)


def corruption_table(section: Mapping[str, Any], max_every: int = 7) -> str:
    """The plain-text robustness table of a section of :func:`evaluate_corruptions`: rows
    corruption@modality × severity (0: clean), columns as :func:`columns`; then a line per
    corruption with its mean error and its degradation from clean."""
    cols = columns(section, max_every)
    label_width = max([len("corruption"), *(len(k) for k in section["summary"])]) + 4
    widths = [max(7, len(title)) for title, _ in cols]
    header = f"{'corruption':<{label_width}}{'sev':>4}  " + "  ".join(
        f"{title:>{w}}" for (title, _), w in zip(cols, widths, strict=True)
    )
    metric = section["metric"]
    lines = [f"{metric} (%) under corrupted inputs ({section['split']} split):", header]
    for label, by_severity in _rows(section).items():
        for severity in sorted(by_severity):
            values = by_severity[severity]
            cells = "  ".join(
                f"{_mean(values, members):>{w}.2f}"
                for (_, members), w in zip(cols, widths, strict=True)
            )
            lines.append(f"{label:<{label_width}}{severity:>4}  {cells}")
    error = "error" if section["lower_is_better"] else f"error (100 - {metric})"
    lines.append(f"clean {error}, averaged over combinations: {section['clean_error']:.2f}")
    for label, row in section["summary"].items():
        lines.append(
            f"{label}: mean {error} {row['mean_error']:.2f}, "
            f"degradation {row['degradation']:+.2f} points vs clean"
        )
    if section["summary"]:
        lines.append(f"mean degradation: {section['mean_degradation']:+.2f} points")
    return "\n".join(lines)


def corruption_figure(section: Mapping[str, Any], path: Path, max_every: int = 7) -> Path:
    """One panel per corruption (label): the metric against severity (0: clean), one line
    per column of :func:`columns`; written to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _rows(section)
    cols = columns(section, max_every)
    panels = max(1, len(rows))
    per_row = min(panels, 3)
    lines = (panels + per_row - 1) // per_row
    figure, axes = plt.subplots(
        lines, per_row, figsize=(4.2 * per_row, 3.2 * lines), squeeze=False, sharey=True
    )
    for axis in axes.flat[panels:]:
        axis.set_visible(False)
    for axis, (label, by_severity) in zip(axes.flat, rows.items(), strict=False):
        severities = sorted(by_severity)
        for title, members in cols:
            style = "--" if title in (AVERAGE, SINGLE_AVERAGE) else "-"
            axis.plot(
                severities,
                [_mean(by_severity[s], members) for s in severities],
                style,
                marker="o",
                markersize=3,
                label=title,
            )
        axis.set_title(label)
        axis.set_xlabel("severity (0: clean)")
        axis.set_xticks(range(0, 6))
        axis.grid(alpha=0.3)
    for axis in axes[:, 0]:
        axis.set_ylabel(f"{section['metric']} (%)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8)
    figure.tight_layout(rect=(0, 0.08 if len(labels) <= 4 else 0.14, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def figure_path(evaluation: Path) -> Path:
    """Where the corruption figure of an evaluation JSON goes: ``<stem>-corruptions.png``
    next to it."""
    return evaluation.with_name(f"{evaluation.stem}-corruptions.png")


def print_corruptions(section: Mapping[str, Any], evaluation: Path, figures: bool = True) -> None:
    """``mmanet evaluate --corrupt``: print the section's table and summary lines and,
    with ``figures``, write its figure next to the evaluation JSON ``evaluation``."""
    print()
    print(corruption_table(section))
    if figures and section["results"]:
        print(f"figure: {corruption_figure(section, figure_path(evaluation))}")


__all__ = [
    "ALL",
    "BatchCorruption",
    "ChannelStats",
    "TrainingCorruption",
    "columns",
    "corruption_figure",
    "corruption_table",
    "corruption_targets",
    "data_domains",
    "error_of",
    "evaluate_corruptions",
    "figure_path",
    "print_corruptions",
    "training_corruption",
]
