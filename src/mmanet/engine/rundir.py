"""A run's folder: whether a run may write into it (runs never mix), what it may change
when it resumes, and the summary printed when a run starts."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import yaml
from torch.utils.data import Dataset

from mmanet.config import Config, build_config, differences, to_dict
from mmanet.data import DataBundle
from mmanet.engine.checkpoint import (
    RUN_RECORD,
    checkpoint_dir,
    checkpoint_position,
    latest_checkpoint,
)
from mmanet.engine.results import EVALUATIONS
from mmanet.engine.selection import Validation
from mmanet.errors import ConfigError
from mmanet.plugins import recorded_imports

# Keys that say how a run runs, not what it computes: a resumed run (or a comparison
# reusing a finished one) may have other values.
RUNTIME_KEYS = (
    "progress",
    "tensorboard",
    "threads",
    "device",
    "data.num_workers",
    "data.eval_batch_size",
    "data.rendered.cache_dir",
)
# a resumed run may also train longer, or have moved to another folder
RESUMABLE_KEYS = (*RUNTIME_KEYS, "optim.epochs", "out")
ARTEFACTS = (  # what a run writes into its folder (removed by --overwrite)
    "config.yaml",
    RUN_RECORD,
    "checkpoints",
    "log.jsonl",
    "log.csv",
    "miner.json",
    "curves.png",
    "tensorboard",
    "predictions",
    EVALUATIONS,
)


def holds_run(run_dir: Path) -> bool:
    """Whether the folder holds a run (its config or a checkpoint)."""
    return (run_dir / "config.yaml").is_file() or checkpoint_dir(run_dir).is_dir()


def as_recorded(config: Config) -> Config:
    """The config as a run records it (``config.yaml``, each checkpoint): each file of
    ``imports`` as its absolute path, so that the run is evaluated, exported or compared
    from any folder (a module name stays a name)."""
    return replace(config, imports=recorded_imports(config.imports))


def changed_keys(saved: Config, config: Config, allowed: tuple[str, ...]) -> list[str]:
    """The dotted keys whose values differ between two configs (their ``imports`` as
    recorded), except ``allowed``."""
    found = differences(to_dict(as_recorded(saved)), to_dict(as_recorded(config)))
    return [f"{key}: {a!r} -> {b!r}" for key, a, b in found if key not in allowed]


def saved_config(run_dir: Path) -> Config:
    return build_config(overrides=yaml.safe_load((run_dir / "config.yaml").read_text()) or {})


def refuse_another_config(run_dir: Path, config: Config, what: str = "a run") -> None:
    """An error naming the keys when ``run_dir`` holds ``what`` trained with another config
    (:data:`RUNTIME_KEYS` aside): a comparison or a study reuses a finished run only when it
    is the same run."""
    if (run_dir / "config.yaml").is_file():
        changed = changed_keys(saved_config(run_dir), config, RUNTIME_KEYS)
        if changed:
            raise ConfigError(
                f"{run_dir} holds {what} with another config ({'; '.join(changed)}); "
                "choose another --out or remove it"
            )


def prepare(run_dir: Path, config: Config, resume: bool, overwrite: bool) -> bool:
    """Check that the run may write into ``run_dir`` and return whether it resumes.

    Training into a folder that holds another run is an error, unless ``resume`` (the
    same config but for :data:`RESUMABLE_KEYS`, no fewer epochs than it has trained, and a
    checkpoint to continue from) or ``overwrite`` (then :func:`clear` removes the run's
    files). Reads only: under data parallelism every process checks before any writes
    (the trainer waits between)."""
    if resume and overwrite:
        raise ConfigError(
            f"--resume continues the run in {run_dir} and --overwrite replaces it; choose one"
        )
    latest = latest_checkpoint(run_dir)
    if resume:
        if latest is None:
            started = (run_dir / "config.yaml").is_file()
            raise ConfigError(
                f"{run_dir}: nothing to resume (the run there never finished an epoch); "
                "start it again with --overwrite"
                if started
                else f"{run_dir}: nothing to resume (no checkpoint); train without --resume"
            )
        if (run_dir / "config.yaml").is_file():
            changed = changed_keys(saved_config(run_dir), config, RESUMABLE_KEYS)
            if changed:
                raise ConfigError(
                    f"{run_dir}: --resume with another configuration ({'; '.join(changed)}); "
                    f"only {', '.join(RESUMABLE_KEYS)} may change"
                )
        epoch, steps = checkpoint_position(latest)
        trained = epoch + (1 if steps else 0)  # an interrupted epoch counts as begun
        if config.optim.epochs < trained:
            raise ConfigError(
                f"{run_dir}: --resume with optim.epochs={config.optim.epochs}, but the run has "
                f"reached epoch {trained}; give optim.epochs={trained} or more"
            )
        return True
    if holds_run(run_dir) and not overwrite:
        if latest is None and not (run_dir / RUN_RECORD).is_file():
            raise ConfigError(
                f"{run_dir} holds a run that never finished an epoch (no checkpoint); "
                "replace it with --overwrite, or choose another out="
            )
        raise ConfigError(
            f"{run_dir} holds another run; choose another out=, continue it with --resume, "
            "or replace it with --overwrite"
        )
    return False


def clear(run_dir: Path) -> None:
    """Remove a run's files from ``run_dir`` (``--overwrite``); other files stay."""
    for name in ARTEFACTS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for stale in run_dir.glob("results_*.json"):
        stale.unlink()


def run_record(
    method: str,
    epoch: int,
    last: str,
    previous: dict,
    validation: Validation,
    teacher: dict | None = None,
) -> dict:
    """The run's record (``run.json``): its last and best checkpoints (folders relative to
    the run), the validation, which checkpoint is its result (``default``: the best
    validated one, else the last) and, for a distilling run, the teacher's checkpoint."""
    return {
        "format": "mmanet-run-1",
        "method": method,
        "epochs": epoch,
        "last": last,
        "best": previous.get("best"),
        "best_epoch": validation.best_epoch,
        "validation": {
            "metric": validation.metric,
            "over": validation.over,
            "best": validation.best,
        }
        if validation.enabled
        else None,
        "stopped_early": validation.should_stop,
        "default": "best" if validation.enabled else "last",
        "teacher": teacher,
    }


def summary(config: Config, data: DataBundle, train: Dataset, device: str) -> str:
    """What a run is about to do: the method, the data (split sizes, classes, modalities,
    how many training samples have each, and how many files are read as missing because
    they hold NaN or inf), the device and the output folder."""

    def share(count: int, total: int) -> str:
        """``count/total (p %)``; p is 100 or 0 only when exact (239/240 is 99.6 %)."""
        text = f"{100 * count / total:.1f}"
        if count in (0, total):
            text = text.removesuffix(".0")
        elif text in ("0.0", "100.0"):
            text = "< 0.1" if count < total / 2 else "> 99.9"
        return f"{count}/{total} ({text} %)"

    names = list(data.modalities)
    table = data.availability(data.train)
    lines = [
        f"mmanet: {config.method.name} on {config.data.name}: {data.num_classes} classes, "
        f"modalities {', '.join(names)}; device {device}; writing to {config.out}",
    ]
    used = f" (training on {len(train)})" if len(train) != len(data.train) else ""
    lines.append(
        f"  samples: train {len(data.train)}{used}, val {len(data.val)}, test {len(data.test)}"
    )
    if not bool(table.all()):
        shares = ", ".join(
            f"{name} {share(int(table[:, i].sum()), len(table))}" for i, name in enumerate(names)
        )
        complete = share(int(table.all(dim=1).sum()), len(table))
        lines.append(f"  training samples with each modality: {shares}; complete {complete}")
    dropped = data.nonfinite_files
    if dropped:
        per_modality = ", ".join(
            f"{name} {sum(file.modality == name for file in dropped)}"
            for name in names
            if any(file.modality == name for file in dropped)
        )
        first = f"{dropped[0].where}: {dropped[0].path}"
        if len(dropped) == 1:
            what = f"1 file ({per_modality}) holds NaN or infinite values and is read as a "
            what += f"missing modality: {first}"
        else:
            what = f"{len(dropped)} files ({per_modality}) hold NaN or infinite values and are "
            what += f"read as missing modalities; the first: {first}"
        lines.append(f"  data.manifest.nonfinite=missing: {what}")
    return "\n".join(lines)


__all__ = [
    "RESUMABLE_KEYS",
    "RUNTIME_KEYS",
    "as_recorded",
    "changed_keys",
    "clear",
    "holds_run",
    "prepare",
    "refuse_another_config",
    "run_record",
    "summary",
]
