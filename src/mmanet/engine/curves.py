"""``curves.png`` in every run folder: the loss terms per epoch, and the validation metric
(or, without validation, the mean training accuracy over the combinations)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def training_curves(rows: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """Plot the training log ``rows`` into ``path`` (atomically); None without rows."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmanet.io import atomic_write

    epochs = [row["epoch"] for row in rows]
    fig, (losses, quality) = plt.subplots(1, 2, figsize=(10, 3.6))
    terms = [k for k in dict.fromkeys(k for row in rows for k in row) if k.startswith("loss")]
    for term in terms:
        points = [(row["epoch"], row[term]) for row in rows if term in row]
        losses.plot(*zip(*points, strict=True), marker=".", label=term)
    losses.set_xlabel("epoch")
    losses.set_ylabel("mean over the epoch's steps")
    losses.set_yscale(
        "log" if all(v > 0 for r in rows for k, v in r.items() if k in terms) else "linear"
    )
    losses.legend(fontsize=7)
    validation = [k for k in rows[-1] if k.startswith("val/") and k.count("/") == 1]
    if validation:
        key = validation[0]
        points = [(row["epoch"], row[key]) for row in rows if key in row]
        quality.plot(*zip(*points, strict=True), marker="o", label=f"{key} (mean of combinations)")
        quality.set_ylabel(key.split("/", 1)[1] + " (%), val split")
    else:
        accuracy = [
            (row["epoch"], sum(v for k, v in row.items() if k.startswith("train_acc/"))
             / max(1, sum(k.startswith("train_acc/") for k in row)))
            for row in rows
        ]  # fmt: skip
        quality.plot(*zip(*accuracy, strict=True), marker=".", label="training accuracy (mean)")
        quality.set_ylabel("accuracy (%), training batches")
    quality.set_xlabel("epoch")
    quality.legend(fontsize=7)
    for axis in (losses, quality):
        axis.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return path


__all__ = ["training_curves"]
