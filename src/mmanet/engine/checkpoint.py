"""Safe, self-describing, atomically written checkpoints.

A checkpoint is a folder ``<run>/checkpoints/epoch-NNNN/`` with

- ``model.safetensors``: the weights (no pickle);
- ``state.pt``: optimizer, scheduler, miner and RNG states -- tensors and plain
  containers only, loaded with ``torch.load(weights_only=True)``;
- ``meta.json``: epoch, modality names and order, class names, method, code version.

The folder is written under a temporary name, every file fsynced, then renamed:
a kill at any moment leaves the previous checkpoints intact, and a folder with the
final name is always complete.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mmanet.errors import CheckpointError
from mmanet.io import fsync_dir

# epoch-NNNN: after epoch N; epoch-NNNN-step-SSSSSS: S steps into epoch N + 1 (interrupted)
_NAME = re.compile(r"^epoch-(\d{4,})(?:-step-(\d{6,}))?$")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


@contextmanager
def _staged(final: Path) -> Iterator[Path]:
    """A temporary path beside ``final`` for the block to write a folder at; when the
    block completes, the folder (fsynced) replaces ``final`` by a rename, and when it
    fails, it is removed."""
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
        fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_checkpoint(
    run_dir: str | Path,
    epoch: int,
    model_state: dict[str, torch.Tensor],
    state: dict[str, Any],
    meta: dict[str, Any],
    keep: int = 2,
    step: int = 0,
) -> Path:
    """Write checkpoint ``epoch`` atomically and keep the newest ``keep`` of them."""
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / (f"epoch-{epoch:04d}" + (f"-step-{step:06d}" if step else ""))
    for stale in root.glob(".*.tmp-*"):  # left by a writer that was killed
        shutil.rmtree(stale, ignore_errors=True)
    with _staged(final) as tmp:
        tmp.mkdir()
        tensors = {k: v.detach().contiguous().cpu() for k, v in model_state.items()}
        save_file(tensors, tmp / "model.safetensors")
        torch.save(state, tmp / "state.pt")
        (tmp / "meta.json").write_text(json.dumps({**meta, "epoch": epoch}, indent=2))
        for name in ("model.safetensors", "state.pt", "meta.json"):
            with open(tmp / name, "rb") as handle:
                os.fsync(handle.fileno())
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name)]
    return sorted(found, key=checkpoint_position)


def checkpoint_position(path: Path) -> tuple[int, int]:
    """``(epochs completed, steps into the next epoch)`` of a checkpoint folder's name."""
    match = _NAME.match(path.name)
    assert match is not None
    return int(match.group(1)), int(match.group(2) or 0)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


RUN_RECORD = "run.json"  # which checkpoint of a run is its last and which its best


def write_run_record(run_dir: str | Path, record: dict[str, Any]) -> None:
    """The run's record (atomically): ``last`` and ``best`` checkpoint folders (relative to
    the run folder), the epochs, the validation, and which one ``default`` names."""
    from mmanet.io import atomic_write_json

    atomic_write_json(Path(run_dir) / RUN_RECORD, record)


def read_run_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's record, or None for a run folder without one (an older run)."""
    file = Path(run_dir) / RUN_RECORD
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {file}: {err}") from None
    if not isinstance(record, dict):
        raise CheckpointError(f"{file}: expected a JSON object, got {type(record).__name__}")
    return record


def resolve_checkpoint(path: str | Path, select: str | None = None) -> Path:
    """A checkpoint folder as it is, or the checkpoint a run folder's record names:
    ``select`` ``"best"`` (the best validation), ``"last"``, or None (the run's default:
    best when it validated, else last). A run without a record: its latest checkpoint."""
    path = Path(path)
    if (path / "model.safetensors").is_file():
        return path
    record = read_run_record(path)
    if record is None:
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"no checkpoint in {path}")
        if select == "best":
            raise CheckpointError(f"{path}: no best checkpoint (the run has no record)")
        return latest
    choice = select or record.get("default", "last")
    if choice not in ("best", "last"):
        raise CheckpointError(f"unknown checkpoint selection {choice!r}; use best or last")
    chosen = record.get(choice)
    if chosen is None:
        raise CheckpointError(
            f"{path}: no {choice} checkpoint (the run did not validate: validation.every=0)"
        )
    folder = path / chosen
    if not (folder / "model.safetensors").is_file():
        raise CheckpointError(f"{path / RUN_RECORD} names {chosen}, which is not there")
    return folder


def keep_best(run_dir: str | Path, source: Path) -> Path:
    """Copy checkpoint ``source`` to ``checkpoints/best-<its name>`` (atomically) and remove
    the older best; returns the new folder."""
    root = checkpoint_dir(run_dir)
    final = root / f"best-{source.name}"
    with _staged(final) as tmp:
        shutil.copytree(source, tmp)
    for old in root.glob("best-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_meta(path: Path) -> dict[str, Any]:
    """The JSON sidecar of checkpoint folder ``path``: epoch, modalities, classes, config."""
    file = path / "meta.json"
    try:
        meta = json.loads(file.read_text())
    except OSError as err:
        raise CheckpointError(f"cannot read {file}: {err.strerror or err}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {file}: not JSON ({err})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{file}: expected a JSON object, got {type(meta).__name__}")
    return meta


def load_model_state(path: Path) -> dict[str, torch.Tensor]:
    """The weights of checkpoint folder ``path`` (safetensors: never unpickled)."""
    file = path / "model.safetensors"
    if not file.is_file():
        raise CheckpointError(f"{file}: file not found")
    try:
        return load_file(file)
    except SafetensorError as err:
        raise CheckpointError(
            f"cannot read {file}: not a complete safetensors file ({err})"
        ) from None
    except OSError as err:
        raise CheckpointError(f"cannot read {file}: {err.strerror or err}") from None


def load_training_state(path: Path) -> dict[str, Any]:
    """Optimizer, scheduler and RNG states: tensors and plain containers only."""
    file = path / "state.pt"
    if not file.is_file():
        raise CheckpointError(f"{file}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on files it did not write itself
            return torch.load(file, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        if str(err).startswith("Weights only load failed"):
            raise CheckpointError(
                f"cannot read {file}: it holds objects other than tensors and plain "
                "containers; refusing to unpickle it"
            ) from None
        raise CheckpointError(f"cannot read {file}: {_first_sentence(err)}") from None
    except Exception as err:  # torch raises several types for corrupt files
        raise CheckpointError(f"cannot read {file}: {_first_sentence(err)}") from None


def _first_sentence(err: Exception) -> str:
    """The first line of an error's message, up to its first full stop."""
    lines = str(err).strip().splitlines()
    return lines[0].split(". ")[0].rstrip(".") if lines else type(err).__name__


def check_weights(
    own: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    path: Path,
    strict_keys: bool = True,
) -> None:
    """Raise a CheckpointError naming the first weight of ``state`` that does not fit the
    model's ``own`` state dict (a missing or unexpected key, or another shape)."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if strict_keys and (missing or unexpected):
        key = (missing or unexpected)[0]
        what = "missing from" if missing else "unexpected in"
        raise CheckpointError(
            f"{path}: weight '{key}' is {what} the checkpoint (wrong architecture?)"
        )
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise CheckpointError(
                f"{path}: weight '{key}' has shape {tuple(value.shape)}, the model "
                f"expects {tuple(own[key].shape)} (wrong architecture?)"
            )


def load_into(model: torch.nn.Module, path: Path, strict_keys: bool = True) -> None:
    """Load ``model.safetensors`` into ``model``; a mismatch names the modality lists or the
    first bad key."""
    modalities = getattr(model, "modalities", None)  # a UnifiedNetwork's, in input order
    trained = load_meta(path).get("modalities")
    if modalities is not None and trained is not None and list(trained) != list(modalities):
        raise CheckpointError(
            f"{path}: trained on modalities {list(trained)}, the model has {list(modalities)}"
        )
    state = load_model_state(path)
    check_weights(model.state_dict(), state, path, strict_keys)
    model.load_state_dict(state, strict=strict_keys)
