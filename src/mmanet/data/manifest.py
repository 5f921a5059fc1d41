"""Bring-your-own data: a CSV manifest with one path column per modality and a label.

Layout::

    rgb,depth,label,split
    images/0001_rgb.png,depth/0001.npy,cat,train
    ...

Paths are relative to the manifest's folder (or absolute). A file is read as a
``.npy`` array (``allow_pickle=False``) or as an image (PNG/JPEG/...: ``(c, h, w)``
float in [0, 1]). Labels may be integers ``0..k-1`` or names (sorted to indices).
The optional ``split`` column holds ``train``/``val``/``test``; without it a
seeded stratified 60/15/25 split is made. Every sample of a modality must have the
shape of that modality's first file.
"""

from __future__ import annotations

import csv
from pathlib import Path

from torch.utils.data import Dataset

from mmanet.config import DataConfig
from mmanet.data.base import DataBundle, DataError, Sample, read_array, stratified_split
from mmanet.registry import DATASETS

SPLITS = ("train", "val", "test")


class ManifestDataset(Dataset):
    """Samples of one split of a manifest; files are read when a sample is requested."""

    def __init__(
        self,
        rows: list[dict[str, Path]],
        labels: list[int],
        shapes: dict[str, tuple[int, ...]],
    ) -> None:
        self.rows, self.labels, self.shapes = rows, labels, shapes

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Sample:
        sample = {}
        for name, path in self.rows[index].items():
            tensor = read_array(path)
            if tuple(tensor.shape) != self.shapes[name]:
                raise DataError(
                    f"{path}: shape {tuple(tensor.shape)} differs from {self.shapes[name]} "
                    f"of the first '{name}' file"
                )
            sample[name] = tensor
        return sample, self.labels[index]


def load_manifest(
    manifest: str | Path,
    modalities: list[str] | None,
    label_column: str = "label",
    split_column: str = "split",
    split_seed: int = 0,
) -> DataBundle:
    manifest = Path(manifest)
    try:
        with manifest.open(newline="") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            records = list(reader)
    except FileNotFoundError:
        raise DataError(f"manifest not found: {manifest}") from None
    if label_column not in columns:
        raise DataError(f"{manifest}: no label column '{label_column}' (columns: {columns})")
    if modalities is None:
        modalities = [c for c in columns if c not in (label_column, split_column)]
    for name in modalities:
        if name not in columns:
            raise DataError(f"{manifest}: no column for modality '{name}' (columns: {columns})")
    if len(modalities) < 2:
        raise DataError(f"{manifest}: need at least two modality columns, got {modalities}")
    if not records:
        raise DataError(f"{manifest}: no samples")

    seen: dict[tuple[str, ...], int] = {}
    for line, record in enumerate(records, start=2):
        if None in record or None in record.values():  # csv: too many / too few fields
            raise DataError(
                f"{manifest}: line {line}: wrong number of fields (the header has {len(columns)})"
            )
        key = tuple(record[name] for name in modalities)
        if key in seen:
            raise DataError(f"{manifest}: line {line} duplicates line {seen[key]}")
        seen[key] = line

    raw_labels = [record[label_column].strip() for record in records]
    if all(lab.lstrip("-").isdigit() for lab in raw_labels):
        ints = [int(lab) for lab in raw_labels]
        if min(ints) < 0:
            raise DataError(f"{manifest}: label {min(ints)} is negative")
        class_names = [str(c) for c in range(max(ints) + 1)]
        labels = ints
    else:
        class_names = sorted(set(raw_labels))
        labels = [class_names.index(lab) for lab in raw_labels]

    base = manifest.parent
    rows = [{name: base / record[name] for name in modalities} for record in records]
    for line, (record, row) in enumerate(zip(records, rows, strict=True), start=2):
        for name, path in row.items():  # fail before training rather than in the middle
            if not record[name].strip():
                raise DataError(f"{manifest}: line {line}: no file for modality '{name}'")
            if not path.is_file():
                raise DataError(f"{manifest}: line {line}: file not found: {path}")
    shapes = {name: tuple(read_array(rows[0][name]).shape) for name in modalities}

    if split_column in columns:
        indices: dict[str, list[int]] = {s: [] for s in SPLITS}
        for line, record in enumerate(records, start=2):
            split = record[split_column].strip()
            if split not in indices:
                raise DataError(f"{manifest}: line {line}: split {split!r} is not one of {SPLITS}")
            indices[split].append(line - 2)
    else:
        parts = stratified_split(labels, (0.60, 0.15, 0.25), split_seed)
        indices = dict(zip(SPLITS, parts, strict=True))
    for split, idx in indices.items():
        if not idx:
            raise DataError(f"{manifest}: the {split} split is empty")

    def subset(idx: list[int]) -> ManifestDataset:
        return ManifestDataset([rows[i] for i in idx], [labels[i] for i in idx], shapes)

    return DataBundle(
        train=subset(indices["train"]),
        val=subset(indices["val"]),
        test=subset(indices["test"]),
        modalities=list(modalities),
        input_shapes=shapes,
        class_names=class_names,
    )


@DATASETS.register("manifest")
def build_manifest(cfg: DataConfig) -> DataBundle:
    """``data.name=manifest`` (inputs are read with the default reader, as the loader reads
    them)."""
    if cfg.manifest is None:
        raise DataError("data.name=manifest needs data.manifest=<path to the CSV>")
    return load_manifest(
        cfg.manifest, cfg.modalities, cfg.label_column, cfg.split_column, cfg.split_seed
    )
