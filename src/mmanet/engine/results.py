"""A run's results file, ``results_<split>.json``: the metrics of every combination and
where they came from (method, epoch, code version, Ω, the processes that agreed)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mmanet.config import Config
from mmanet.engine import distributed
from mmanet.io import atomic_write_json
from mmanet.provenance import code_version


def check_ranks_agree(model: torch.nn.Module, omega: list[str] | None) -> dict[str, Any]:
    """Every process's Ω and weight digest; an error if the processes have diverged."""
    digest = hashlib.sha256()
    for value in model.state_dict().values():
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    ranks = distributed.all_gather_object({"omega": omega, "weights": digest.hexdigest()})
    if any(r != ranks[0] for r in ranks):
        raise RuntimeError(f"data-parallel processes diverged: {ranks}")
    return {"world_size": distributed.world_size(), "ranks": ranks}


def run_report(
    config: Config,
    split: str,
    epoch: int,
    results: dict[str, Any],
    omega: list[str] | None,
) -> dict[str, Any]:
    """A run's evaluation report: its metrics and where they came from."""
    report = {
        "method": config.method.name,
        "split": split,
        "epoch": epoch,
        "code_version": code_version(),
        **results,
    }
    if config.method.combination:
        report["trained_on"] = config.method.combination
    if omega is not None:
        report["omega"] = omega
    return report


def write_results(
    run_dir: Path, split: str, report: dict[str, Any], skipped: list[str]
) -> dict[str, Any]:
    """Write ``results_<split>.json`` (rank 0), listing any unreadable samples left out."""
    if skipped:
        report["skipped"] = list(skipped)
        print(
            f"mmanet: skipped {len(skipped)} unreadable samples "
            f"(listed in {run_dir / f'results_{split}.json'})"
        )
    atomic_write_json(run_dir / f"results_{split}.json", report)
    return report


def evaluation_path(
    run_dir: Path, split: str, checkpoint: Path, overrides: Sequence[str] = ()
) -> Path:
    """Where ``mmanet evaluate`` writes: ``<run>/evaluations/<split>-<checkpoint folder>.json``,
    with a digest of the config overrides when there are any, so that an evaluation never
    replaces the training's ``results_<split>.json`` nor one of other settings."""
    name = f"{split}-{checkpoint.name}"
    if overrides:
        name += "-" + hashlib.sha256("\n".join(overrides).encode()).hexdigest()[:8]
    return Path(run_dir) / EVALUATIONS / f"{name}.json"


EVALUATIONS = "evaluations"  # the folder of a run's evaluate reports

__all__ = ["EVALUATIONS", "check_ranks_agree", "evaluation_path", "run_report", "write_results"]
