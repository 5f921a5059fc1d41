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

import dataclasses
from typing import Any

from mmanet.config import DataConfig, from_dict, owned_settings

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


def data_config(name: str, **values: Any) -> DataConfig:
    """The :class:`DataConfig` of dataset ``name``, checked as a config file's ``data``
    section is: ``values`` that are DataConfig keys (or a dataset's name, with a mapping of
    its settings) are its, the others the dataset's own settings (``data.<name>.<key>``),
    e.g. ``data_config("cefa", root="CeFA", protocol="4@5")``."""
    keys = {f.name for f in dataclasses.fields(DataConfig)} | set(owned_settings(DataConfig))
    own = {key: values.pop(key) for key in list(values) if key not in keys}
    section = {"name": name, **values, **({name: own} if own else {})}
    return from_dict(DataConfig, section, "data.")


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
    "data_config",
    "input_reader",
    "register_dataset",
]
