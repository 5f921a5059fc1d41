"""UCI Multiple Features (handwritten digits, 6 views), bundled with mmanet.

2000 digits '0'..'9' (200 each) described by six feature sets of the same scans:
``fou`` 76 Fourier coefficients of the contours, ``fac`` 216 profile correlations,
``kar`` 64 Karhunen-Loève coefficients, ``pix`` 240 pixel averages in 2x3 windows
(a 16 x 15 image), ``zer`` 47 Zernike moments, ``mor`` 6 morphological features.

Split (fixed, stratified): per class a seeded shuffle (``split_seed``, default 0)
gives 60 % train, 15 % validation, 25 % test, i.e. 1200 / 300 / 500 samples.
Every view is standardised with the mean and standard deviation of the training split.

The data (CC BY 4.0, Duin 1998, https://doi.org/10.24432/C5HC70; see
``mmanet/datasets/mfeat/README.md``) ship inside the package as gzip-compressed CSV
files, ``mfeat-<view>.csv.gz``: a header row, the features, the label in the last column.
``data.root`` names another folder of such files, plain (``.csv``) or compressed.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from mmanet.config import DataConfig
from mmanet.data.base import DataBundle, DataError, TensorMultimodalDataset, stratified_split
from mmanet.registry import DATASETS

VIEWS = ("fou", "fac", "kar", "pix", "zer", "mor")
FRACTIONS = (0.60, 0.15, 0.25)


def default_root() -> Path:
    """The copy of the data bundled with mmanet."""
    return Path(__file__).resolve().parent.parent / "datasets" / "mfeat"


def read_view(root: Path, view: str) -> tuple[np.ndarray, np.ndarray]:
    """One view's features and labels from ``mfeat-<view>.csv`` in ``root`` or, when that
    file is absent, from its gzip-compressed ``mfeat-<view>.csv.gz``."""
    path = root / f"mfeat-{view}.csv"
    if not path.is_file() and path.with_suffix(".csv.gz").is_file():
        path = path.with_suffix(".csv.gz")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="ascii") as lines:
                table = _parse(lines)
        else:
            table = _parse(path)
    except FileNotFoundError:
        raise DataError(f"Multiple Features file not found: {path}") from None
    except ValueError as err:
        raise DataError(f"cannot parse {path}: {err}") from None
    return table[:, :-1], table[:, -1].astype(np.int64)


def _parse(source) -> np.ndarray:
    return np.loadtxt(source, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)


def load_mfeat(
    root: str | Path | None = None, views: list[str] | None = None, split_seed: int = 0
) -> DataBundle:
    root = Path(root) if root is not None else default_root()
    views = list(views) if views is not None else list(VIEWS)
    unknown = [v for v in views if v not in VIEWS]
    if unknown:
        raise DataError(f"unknown Multiple Features view {unknown[0]!r}; views: {', '.join(VIEWS)}")
    features: dict[str, np.ndarray] = {}
    labels: np.ndarray | None = None
    for view in views:
        x, y = read_view(root, view)
        if labels is not None and not np.array_equal(labels, y):
            raise DataError(f"labels of mfeat-{view}.csv differ from those of mfeat-{views[0]}.csv")
        features[view], labels = x, y
    assert labels is not None
    train_idx, val_idx, test_idx = stratified_split(labels.tolist(), FRACTIONS, split_seed)

    def subset(indices: list[int]) -> TensorMultimodalDataset:
        return TensorMultimodalDataset(
            {v: torch.from_numpy(standardised[v][indices]).float() for v in views},
            torch.from_numpy(labels[indices]),
        )

    standardised = {}
    for view, x in features.items():
        mean = x[train_idx].mean(axis=0)
        std = x[train_idx].std(axis=0)
        standardised[view] = (x - mean) / np.where(std > 1e-8, std, 1.0)
    return DataBundle(
        train=subset(train_idx),
        val=subset(val_idx),
        test=subset(test_idx),
        modalities=views,
        input_shapes={v: (features[v].shape[1],) for v in views},
        class_names=[str(c) for c in range(10)],
    )


@DATASETS.register("mfeat")
def build_mfeat(cfg: DataConfig) -> DataBundle:
    """``data.name=mfeat`` (inputs are read with the default reader: arrays as given)."""
    return load_mfeat(cfg.root, cfg.modalities, cfg.split_seed)
