"""Predictions of a trained deployment network from files, for any subset of its modalities.

An input is a ``.npy`` array already in the network's input shape, or an image that is
preprocessed as the run's evaluation split was: resized face images in [0, 1] for
CASIA-SURF / CeFA; ImageNet-normalised RGB and depth PNGs in millimetres normalised with
the run's depth statistics for NYUv2 and the rendered scenes (Cityscapes depth: give
the normalised ``.npy``); images as read by the manifest loader (in [0, 1]) otherwise.
The modalities not given are absent: zeros with a 0 in the presence mask.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmanet.config import Config
from mmanet.data.manifest import read_array
from mmanet.engine.network import checkpoint_config, load_network
from mmanet.errors import DataError
from mmanet.models import UnifiedNetwork
from mmanet.registry import TASKS
from mmanet.tasks import Task

FACE_DATA = ("casia_surf", "cefa")
RGBD_DATA = ("nyuv2", "rendered", "cityscapes")


def depth_statistics(config: Config) -> tuple[float, float]:
    """The depth mean / std the run normalised with (its config, else the dataset's)."""
    from mmanet.data.cityscapes import CITYSCAPES_DEPTH_MEAN, CITYSCAPES_DEPTH_STD
    from mmanet.data.nyuv2 import NYUV2_DEPTH_MEAN, NYUV2_DEPTH_STD
    from mmanet.data.render_rgbd import DEPTH_MEAN_MM, DEPTH_STD_MM

    defaults = {
        "nyuv2": (NYUV2_DEPTH_MEAN, NYUV2_DEPTH_STD),
        "rendered": (DEPTH_MEAN_MM, DEPTH_STD_MM),
        "cityscapes": (CITYSCAPES_DEPTH_MEAN, CITYSCAPES_DEPTH_STD),
    }[config.data.name]
    mean = config.data.depth_mean if config.data.depth_mean is not None else defaults[0]
    std = config.data.depth_std if config.data.depth_std is not None else defaults[1]
    return mean, std


def read_input(path: Path, modality: str, shape: Sequence[int], config: Config) -> torch.Tensor:
    """One modality's file as a tensor of ``shape`` (the network's per-sample input)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (given for modality {modality!r})")
    data = config.data
    if path.suffix.lower() == ".npy":
        tensor = read_array(path)
    elif data.name in FACE_DATA:
        tensor = _face_image(path, modality, data.image_size)
    elif data.name in RGBD_DATA and modality in ("rgb", "depth"):
        tensor = _rgbd_image(path, modality, tuple(shape[1:]), config)
    else:
        tensor = read_array(path)
    if tuple(tensor.shape) != tuple(shape):
        raise DataError(
            f"{path}: {modality} input of shape {tuple(tensor.shape)}, "
            f"the network needs {tuple(shape)}"
        )
    return tensor.float()


def _face_image(path: Path, modality: str, image_size: int) -> torch.Tensor:
    from mmanet.data.transforms import face_transforms, read_image

    _, evaluation = face_transforms([modality], image_size, image_size, augment=False)
    return evaluation({modality: read_image(path)})[modality]


def _rgbd_image(path: Path, modality: str, size: tuple[int, int], config: Config) -> torch.Tensor:
    from mmanet.data.nyuv2 import read_depth_mm, read_png, segmentation_transforms

    mean, std = depth_statistics(config)
    _, evaluation = segmentation_transforms(size, mean, std, augment=False)
    if modality == "rgb":
        rgb = read_png(path, np.uint8, 3)
        depth = np.zeros(rgb.shape[:2], dtype=np.float32)
    else:
        depth = read_depth_mm(path)
        rgb = np.zeros((*depth.shape, 3), dtype=np.uint8)
    label = np.zeros(depth.shape, dtype=np.uint8)
    rgb_tensor, depth_tensor, _ = evaluation(rgb, depth, label)
    return rgb_tensor if modality == "rgb" else depth_tensor


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
    checkpoint: str | Path, files: Mapping[str, str | Path]
) -> tuple[dict[str, Any], Task]:
    """The task's prediction (class probabilities, a label map) for one sample given as
    ``{modality: file}``, and the task (which writes it)."""
    model, meta = load_network(checkpoint)
    check_modalities(list(files), model)
    config = checkpoint_config(Path(meta["checkpoint"]), meta)
    inputs = {
        name: read_input(Path(path), name, model.input_shapes[name], config)[None]
        for name, path in files.items()
    }
    task = checkpoint_task(meta)
    result: dict[str, Any] = {
        "modalities_used": [name for name in model.modalities if name in files],
        "modalities_missing": [name for name in model.modalities if name not in files],
        "class_names": meta["class_names"],
        **task.prediction(model(inputs).logits[0]),
    }
    return result, task


@torch.no_grad()
def predict_manifest(checkpoint: str | Path, manifest: Path, out: Path) -> int:
    """One row of probabilities per manifest row (CSV: one path column per modality; an
    empty cell is a missing modality); returns the number of rows written."""
    from mmanet.io import atomic_write_text

    model, meta = load_network(checkpoint)
    config = checkpoint_config(Path(meta["checkpoint"]), meta)
    try:
        with open(manifest, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as err:
        raise DataError(f"cannot read manifest {manifest}: {err.strerror}") from None
    if not rows:
        raise DataError(f"{manifest}: no rows")
    columns = [c for c in rows[0] if c in model.modalities]
    check_modalities(columns, model)
    names = meta["class_names"]
    lines = [",".join(["row", "modalities", *names])]
    for index, row in enumerate(rows):
        given = {c: row[c] for c in columns if row[c]}
        if not given:
            raise DataError(f"{manifest}: row {index + 1} gives no modality")
        inputs = {
            name: read_input(Path(path), name, model.input_shapes[name], config)[None]
            for name, path in given.items()
        }
        probabilities = model(inputs).logits[0].softmax(dim=0)
        if probabilities.ndim != 1:
            raise DataError("predict --manifest is for classification; give one sample's files")
        cells = [f"{p:.6f}" for p in probabilities.tolist()]
        lines.append(",".join([str(index), "+".join(given), *cells]))
    atomic_write_text(out, "\n".join(lines) + "\n")
    return len(rows)
