"""Datasets: one module per on-disk format; each returns a :class:`DataBundle`."""

from __future__ import annotations

from mmanet.config import DataConfig
from mmanet.data.base import DataBundle, DataError, TensorMultimodalDataset, collate
from mmanet.data.manifest import load_manifest
from mmanet.data.mfeat import load_mfeat


def build_data(cfg: DataConfig) -> DataBundle:
    """The dataset named by ``cfg.name``."""
    if cfg.name == "mfeat":
        return load_mfeat(cfg.root, cfg.modalities, cfg.split_seed)
    if cfg.name == "manifest":
        if cfg.manifest is None:
            raise DataError("data.name=manifest needs data.manifest=<path to the CSV>")
        return load_manifest(
            cfg.manifest, cfg.modalities, cfg.label_column, cfg.split_column, cfg.split_seed
        )
    raise DataError(f"unknown dataset data.name={cfg.name!r}; use 'mfeat' or 'manifest'")


__all__ = ["DataBundle", "DataError", "TensorMultimodalDataset", "build_data", "collate"]
