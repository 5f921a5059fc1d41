"""Datasets: one module per on-disk format; each returns a :class:`DataBundle`.

A dataset registers itself by name (``data.name``) in its own module, with
``@register_dataset("name")`` (inside :mod:`mmanet.data`: ``@DATASETS.register``) on either

* a function ``(DataConfig) -> DataBundle``; its inputs are then read by the default
  :class:`ArrayReader` (``.npy`` arrays as given, images in [0, 1]), or
* a class with the staticmethods ``build(cfg: DataConfig) -> DataBundle`` and
  ``reader(cfg: DataConfig) -> InputReader``: how a file given to ``predict`` becomes an input,
  as the dataset's evaluation split preprocesses it.
"""

from __future__ import annotations

from mmanet.config import DataConfig

# The built-in datasets register themselves; they import mmanet.registry, not this package.
from mmanet.data import (  # noqa: F401
    casia_surf,
    cefa,
    cityscapes,
    manifest,
    mfeat,
    nyuv2,
    public,
    rendered,
)
from mmanet.data.base import (
    ArrayReader,
    DataBundle,
    DataError,
    InputReader,
    TensorMultimodalDataset,
    collate,
)
from mmanet.registry import DATASETS

register_dataset = DATASETS.register


def build_data(cfg: DataConfig) -> DataBundle:
    """The dataset named by ``cfg.name`` (its training split made incomplete when
    ``data.missing_fraction`` or ``data.missing_rates`` asks)."""
    from mmanet.data.missing import apply_missing

    entry = DATASETS.get(cfg.name)
    build = getattr(entry, "build", entry)
    return apply_missing(build(cfg), cfg)


def input_reader(cfg: DataConfig) -> InputReader:
    """How a network trained on ``cfg``'s dataset reads an input file: the dataset's reader,
    else :class:`ArrayReader`."""
    reader = getattr(DATASETS.get(cfg.name), "reader", None)
    return ArrayReader() if reader is None else reader(cfg)


__all__ = [
    "ArrayReader",
    "DataBundle",
    "DataError",
    "InputReader",
    "TensorMultimodalDataset",
    "build_data",
    "collate",
    "input_reader",
    "register_dataset",
]
