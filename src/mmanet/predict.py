"""Predictions of a trained deployment network from files, for any subset of its modalities.

An input is a ``.npy`` array already in the network's input shape, or a file that the run's
dataset reads and preprocesses exactly as its evaluation split does: the dataset's
:class:`~mmanet.data.InputReader`, made from the run's config (``describe(modality)`` says
what the file holds and how it becomes the input, e.g. an 8-bit image resized to 112×112
and mapped to (x − 127.5)/128; the ONNX sidecar records the same lines). The modalities not
given are absent: zeros with a 0 in the presence mask. An input holding NaN or inf is an
error naming its file (a manifest row's file, with ``data.manifest.nonfinite=missing`` in the
run's config: a missing modality of that row, as in training), and so is one file given for two
modalities, or a file that cannot be read (empty, truncated, a folder: one line, never a
traceback).

Anti-spoofing (a checkpoint trained with ``data.bona_fide_class``): the prediction also
holds the decision at the threshold of the combination it received
(:mod:`mmanet.deployment_thresholds`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mmanet.data import InputReader, input_reader
from mmanet.data.base import count_nonfinite, shared_file
from mmanet.deployment_thresholds import bona_fide_class, combination_thresholds, decide
from mmanet.engine.network import checkpoint_config, load_network
from mmanet.errors import DataError
from mmanet.models import UnifiedNetwork
from mmanet.registry import TASKS
from mmanet.tasks import Task


class NonFiniteInput(DataError):
    """An input file that holds NaN or inf; the message names it."""


def read_input(path: Path, name: str, model: UnifiedNetwork, reader: InputReader) -> torch.Tensor:
    """One ``name`` file as the network's (1, *input shape) input; NaN or inf in it is a
    DataError naming the file."""
    tensor = reader.read(path, name, model.input_shapes[name])
    bad = count_nonfinite(tensor)
    if bad:
        raise NonFiniteInput(
            f"{path}: holds NaN or infinite values ({bad} of {tensor.numel()}), "
            f"given for modality {name!r}"
        )
    return tensor[None]


def read_inputs(
    files: Mapping[str, str | Path], model: UnifiedNetwork, reader: InputReader
) -> dict[str, torch.Tensor]:
    """``{modality: file}`` as a batch of one sample: ``{modality: (1, *input shape)}``."""
    paths = {name: Path(path) for name, path in files.items()}
    check_distinct_files(paths, "predict")
    return {name: read_input(path, name, model, reader) for name, path in paths.items()}


def check_distinct_files(files: Mapping[str, Path], where: str) -> None:
    """One sample's files, one per modality: a file given for two modalities is a
    DataError, ``where`` (e.g. the manifest and line) first, as in training."""
    pair = shared_file(files)
    if pair is not None:
        raise DataError(f"{where}: {pair}; each modality needs its own file")


def check_modalities(given: Sequence[str], model: UnifiedNetwork) -> None:
    if not given:
        raise DataError(
            "predict: no modality given; pass at least one of "
            + ", ".join(f"--{name} FILE" for name in model.modalities)
        )
    for name in given:
        if name not in model.modalities:
            raise DataError(
                f"predict: unknown modality {name!r}; this network has "
                f"{', '.join(model.modalities)}"
            )


def checkpoint_task(meta: Mapping[str, Any]) -> Task:
    """The task a checkpoint was trained for (what its predictions are)."""
    return TASKS.get(meta.get("task", "classification"))(meta["class_names"])


@torch.no_grad()
def predict_files(
    checkpoint: str | Path,
    files: Mapping[str, str | Path],
    select: str | None = None,
    *,
    thresholds: bool = True,
    point: str | None = None,
) -> tuple[dict[str, Any], Task]:
    """The task's prediction (class probabilities, a label map) for one sample given as
    ``{modality: file}``, and the task (which writes it). Anti-spoofing: also the decision
    at the threshold of the combination given (``point``: which of its thresholds, default
    the run's; ``thresholds=False``: no decision, nothing read from the validation split)."""
    model, meta = load_network(checkpoint, select=select)
    check_modalities(list(files), model)
    reader = input_reader(checkpoint_config(Path(meta["checkpoint"]), meta).data)
    inputs = read_inputs(files, model, reader)
    task = checkpoint_task(meta)
    used = [name for name in model.modalities if name in files]
    logits = model(inputs).logits[0]
    result: dict[str, Any] = {
        "modalities_used": used,
        "modalities_missing": [name for name in model.modalities if name not in files],
        "class_names": meta["class_names"],
        **task.prediction(logits),
    }
    if bona_fide_class(meta) is not None:
        if thresholds:
            table = combination_thresholds(model, meta)
            assert table is not None
            result.update(decide(logits.float().softmax(dim=0), "+".join(used), table, point))
        else:
            result["decision"] = None
            result["decision_note"] = "no thresholds (--no-thresholds)"
    return result, task


@torch.no_grad()
def predict_manifest(
    checkpoint: str | Path,
    manifest: Path,
    out: Path,
    select: str | None = None,
    *,
    thresholds: bool = True,
    point: str | None = None,
) -> int:
    """One row of probabilities per manifest row (CSV: one path column per modality, paths
    relative to the manifest's folder; an empty cell is a missing modality); returns the
    number of rows written. Anti-spoofing: also each row's threshold (that of the row's
    combination) and decision, as :func:`predict_files`."""
    from mmanet.data.manifest import cell_path, read_records
    from mmanet.io import atomic_write_text

    model, meta = load_network(checkpoint, select=select)
    data = checkpoint_config(Path(meta["checkpoint"]), meta).data
    reader = input_reader(data)
    _, rows = read_records(manifest)
    if not rows:
        raise DataError(f"{manifest}: no rows")
    columns = [c for c in rows[0] if c in model.modalities]
    check_modalities(columns, model)
    names = meta["class_names"]
    table = combination_thresholds(model, meta) if thresholds else None
    decided = ["threshold", "decision"] if table is not None else []
    lines = [",".join(["row", "modalities", *names, *decided])]
    for index, row in enumerate(rows):
        where = f"{manifest}: line {index + 2}"
        named = {c: cell_path(manifest, row[c]) for c in columns}
        given = {c: path for c, path in named.items() if path is not None}
        if not given:
            raise DataError(f"{where}: no modality given")
        check_distinct_files(given, where)
        inputs = {}
        for name, path in given.items():
            try:
                inputs[name] = read_input(path, name, model, reader)
            except DataError as err:
                if isinstance(err, NonFiniteInput) and data.manifest.nonfinite == "missing":
                    continue  # as the training loader: that modality is missing here
                raise DataError(f"{where}: {err}") from None
        if not inputs:
            raise DataError(f"{where}: no modality left, every file holds NaN or infinite values")
        probabilities = model(inputs).logits[0].softmax(dim=0)
        if probabilities.ndim != 1:
            raise DataError("predict --manifest is for classification; give one sample's files")
        cells = [f"{p:.6f}" for p in probabilities.tolist()]
        if table is not None:
            combination = "+".join(name for name in model.modalities if name in inputs)
            made = decide(probabilities, combination, table, point)
            threshold = made["threshold"]
            cells += ["" if threshold is None else repr(threshold), made["decision"] or ""]
        lines.append(",".join([str(index), "+".join(inputs), *cells]))
    atomic_write_text(out, "\n".join(lines) + "\n")
    return len(rows)
