"""Per-epoch training log: the epoch's statistics, and JSON lines, CSV and TensorBoard
events (when available)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import torch

from mmanet.io import atomic_write_text
from mmanet.modality import Modalities, mask_code, mask_codes


class RunLogger:
    """Keeps every epoch's row; rewrites ``log.jsonl`` and ``log.csv`` atomically."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.rows: list[dict[str, Any]] = []
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self.writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def resume(self, epoch: int) -> None:
        """Reload the rows of epochs ``<= epoch`` (later ones belong to a lost run)."""
        path = self.run_dir / "log.jsonl"
        if path.is_file():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            self.rows = [row for row in rows if row["epoch"] <= epoch]

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        atomic_write_text(
            self.run_dir / "log.jsonl", "".join(json.dumps(r) + "\n" for r in self.rows)
        )
        columns: list[str] = []
        for r in self.rows:
            columns += [c for c in r if c not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.run_dir / "log.csv", buffer.getvalue())
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, row["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class EpochStatistics:
    """One epoch's log statistics: the mean of every loss term over the steps that had it,
    and the training accuracy of each modality combination over the samples drawn with it.
    Accumulated on the device (no synchronisation per step)."""

    def __init__(self, modalities: Modalities, device: torch.device) -> None:
        self.names = modalities
        self.totals: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.correct = torch.zeros(2 ** len(modalities), device=device)  # summed accuracies
        self.seen = torch.zeros(2 ** len(modalities), device=device)
        self.skipped = 0  # steps whose non-finite loss was skipped (optim.nonfinite=skip)

    def add(
        self, terms: dict[str, torch.Tensor], accuracy: torch.Tensor, mask: torch.Tensor
    ) -> None:
        """A step's loss terms, each sample's accuracy (b,) and its drawn mask (b, m)."""
        for key, value in terms.items():
            self.totals[key] = self.totals.get(key, 0) + value
            self.counts[key] = self.counts.get(key, 0) + 1
        codes = mask_codes(mask)
        self.correct.index_add_(0, codes, accuracy)
        self.seen.index_add_(0, codes, torch.ones_like(codes, dtype=self.seen.dtype))

    def row(self) -> dict[str, Any]:
        """``loss_*`` means, ``skipped_steps`` and ``train_acc/<combination>`` (%)."""
        row: dict[str, Any] = {k: float(v) / self.counts[k] for k, v in self.totals.items()}
        if self.skipped:
            row["skipped_steps"] = self.skipped
        correct, seen = self.correct.cpu(), self.seen.cpu()
        for mask in self.names.combinations:
            code = mask_code(mask)
            if seen[code] > 0:
                accuracy = 100.0 * float(correct[code]) / float(seen[code])
                row[f"train_acc/{self.names.mask_name(mask)}"] = accuracy
        return row


def epoch_line(row: dict[str, Any], epochs: int, best_key: str | None = None) -> str:
    """One epoch of a log in a line: the weighted loss and its terms, the validation
    metric(s) (``best_key``: the one that selects, when this epoch is the best so far), Ω
    when it was mined, and the epoch's time."""
    terms = ", ".join(
        f"{key.removeprefix('loss_')} {value:.4g}"
        for key, value in row.items()
        if key.startswith("loss_")
    )
    parts = [f"epoch {row['epoch']}/{epochs}: loss {row.get('loss', float('nan')):.4g}"]
    if terms:
        parts[0] += f" ({terms})"
    validated = [key for key in row if key.startswith("val/") and key.count("/") == 1]
    for key in validated:
        parts.append(f"val {key[4:]} {row[key]:.2f}{' (best)' if key == best_key else ''}")
    if "omega" in row:
        parts.append(f"Ω {row['omega']}")
    if row.get("skipped_steps"):
        parts.append(f"{row['skipped_steps']} steps skipped (non-finite loss)")
    parts.append(f"{row['epoch_seconds']:.1f} s")
    return " · ".join(parts)
