"""Per-epoch training log: JSON lines, CSV, and TensorBoard events when available."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from mmanet.io import atomic_write_text


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
