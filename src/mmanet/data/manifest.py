"""Bring-your-own data: a CSV manifest with one path column per modality and a label.

Layout::

    rgb,depth,label,split
    images/0001_rgb.png,depth/0001.npy,cat,train
    images/0002_rgb.png,,dog,train
    ...

Paths are relative to the manifest's folder (or absolute); a UTF-8 byte-order mark (as
Excel writes) is skipped. A file is read as a ``.npy`` array (``allow_pickle=False``,
values as they are) or as an image (PNG/JPEG/...: ``(c, h, w)`` float in [0, 1]). An
empty cell is a modality that sample lacks: zeros of the modality's shape stand in, and
when any sample lacks one, every sample carries ``inputs[AVAILABLE_KEY]`` and each split
an ``availability`` table (:mod:`mmanet.data.base`). A row must name one file at least.

Labels may be integers ``0..k-1`` or names (sorted to indices); every class needs a
training sample. The optional ``split`` column holds ``train``/``val``/``test``; without it
a seeded stratified 60/15/25 split is made.

Every file is checked when the manifest loads, from its header alone: it exists, no row
names it for two modalities, and its shape is the one most files of its modality have. Its
values are checked when it is read: NaN or inf is an error naming it
(``data.manifest.nonfinite="error"``); with ``data.manifest.nonfinite="missing"`` such a file
is a missing modality for its sample instead, and the loader reads every floating-point file
once when it loads to build the availability table (the bundle's ``nonfinite_files`` lists those
files; the run's start-up summary counts them and names the first).
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from torch.utils.data import Dataset

from mmanet.config import DataConfig
from mmanet.data.base import (
    AVAILABLE_KEY,
    DataBundle,
    DataError,
    DroppedFile,
    Sample,
    count_nonfinite,
    file_identity,
    not_a_file,
    read_array,
    read_header,
    shared_file,
    stratified_split,
)
from mmanet.errors import ConfigError
from mmanet.registry import DATASETS

SPLITS = ("train", "val", "test")
NONFINITE_FIX = "set data.manifest.nonfinite=missing to count it as a missing modality"

Row = dict[str, Path | None]  # a sample's file per modality; None: the sample lacks it


class ModalityFiles(NamedTuple):
    """A modality's shape and the manifest lines whose file holds floating-point values."""

    shape: tuple[int, ...]
    floating: set[int]


class ManifestDataset(Dataset):
    """Samples of one split of a manifest; files are read when a sample is requested.

    ``availability``: (n, m) bool, the modalities each sample has; with ``incomplete``
    (some sample of the manifest lacks one) every sample carries ``inputs[AVAILABLE_KEY]``.
    """

    def __init__(
        self,
        manifest: Path,
        lines: list[int],
        rows: list[Row],
        labels: list[int],
        shapes: dict[str, tuple[int, ...]],
        incomplete: bool,
    ) -> None:
        self.manifest, self.lines, self.rows, self.labels = manifest, lines, rows, labels
        self.shapes, self.incomplete = shapes, incomplete
        has = [[row[name] is not None for name in shapes] for row in rows]
        self.availability = torch.tensor(has, dtype=torch.bool).reshape(len(rows), len(shapes))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Sample:
        sample = {}
        for name, shape in self.shapes.items():
            path = self.rows[index][name]
            sample[name] = torch.zeros(shape) if path is None else self.read(index, name, path)
        if self.incomplete:
            sample[AVAILABLE_KEY] = self.availability[index].float()
        return sample, self.labels[index]

    def read(self, index: int, name: str, path: Path) -> torch.Tensor:
        """One file, its shape and values checked; errors name the manifest line."""
        where = f"{self.manifest}: line {self.lines[index]}"
        tensor = read_file(path, where)
        if tuple(tensor.shape) != self.shapes[name]:
            raise DataError(
                shape_message(where, path, tuple(tensor.shape), name, self.shapes[name])
            )
        bad = count_nonfinite(tensor)
        if bad:
            raise DataError(
                f"{where}: {path} holds NaN or infinite values ({bad} of {tensor.numel()}); "
                + NONFINITE_FIX
            )
        return tensor


def read_file(path: Path, where: str) -> torch.Tensor:
    """:func:`read_array`, its errors prefixed with ``where`` (the manifest and line)."""
    try:
        return read_array(path)
    except DataError as err:
        raise DataError(f"{where}: {err}") from None


def shape_message(
    where: str, path: Path, shape: tuple[int, ...], name: str, expected: tuple[int, ...]
) -> str:
    """A file of another shape than the modality's other files."""
    return f"{where}: {path} has shape {shape}, the other {name!r} files {expected}"


def cell_path(manifest: Path, cell: str | None) -> Path | None:
    """The file a manifest cell names, relative to the manifest's folder (or absolute);
    None for an empty cell (a missing modality). Training and ``predict --manifest`` alike."""
    value = (cell or "").strip()
    return manifest.parent / value if value else None


def _same_file_key(manifest: Path, cell: str) -> object:
    """What two cells share exactly when they name one file, however written (``a.npy``,
    ``../data/a.npy``, a link); the normalised path for a file that is not there (yet)."""
    path = cell_path(manifest, cell)
    if path is None:
        return ""
    return file_identity(path) or os.path.normpath(path)


def read_records(manifest: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the rows of a CSV file (UTF-8, a byte-order mark skipped)."""
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            records = list(reader)
    except FileNotFoundError:
        raise DataError(f"manifest not found: {manifest}") from None
    except UnicodeDecodeError:
        raise DataError(
            f"{manifest}: line {first_non_utf8_line(manifest.read_bytes())} is not UTF-8 "
            "text; save the manifest as CSV UTF-8"
        ) from None
    except OSError as err:
        raise DataError(f"cannot read manifest {manifest}: {err.strerror}") from None
    return columns, records


def first_non_utf8_line(data: bytes) -> int:
    """The 1-based line of the first byte that is not UTF-8 in ``data``."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        return data[: err.start].count(b"\n") + 1
    return 1


def span(values: list[int]) -> str:
    """Sorted integers as ``a..b`` when they are consecutive, else listed."""
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    return ", ".join(map(str, values))


def some_lines(lines: list[int], limit: int = 5) -> str:
    """Manifest lines for a message: ``line 3``, ``lines 3..13``, ``lines 3, 7, 9, ...``."""
    if len(lines) == 1:
        return f"line {lines[0]}"
    text = span(lines)
    if ".." not in text and len(lines) > limit:
        text = ", ".join(map(str, lines[:limit])) + ", ..."
    return f"lines {text}"


def parse_labels(manifest: Path, raw: list[str]) -> tuple[list[int], list[str], bool]:
    """Class indices, class names and whether the labels were integers."""
    for line, label in enumerate(raw, start=2):
        if not label:
            raise DataError(f"{manifest}: line {line}: no label")
    if not all(label.lstrip("-").isdigit() for label in raw):
        names = sorted(set(raw))
        return [names.index(label) for label in raw], names, False
    ints = [int(label) for label in raw]
    if min(ints) < 0:
        raise DataError(f"{manifest}: label {min(ints)} is negative")
    found = sorted(set(ints))
    for cls in range(max(ints) + 1):
        if cls not in found:
            raise DataError(
                f"{manifest}: class {cls} has no sample (the labels are {span(found)}); integer "
                f"labels are class indices: number the classes 0..{len(found) - 1}, "
                "or use class names"
            )
    return ints, [str(c) for c in range(max(ints) + 1)], True


def check_classes(
    manifest: Path, labels: list[int], names: list[str], indices: dict[str, list[int]], ints: bool
) -> None:
    """Every class has a training sample, and the training split has two classes at least."""

    def named(cls: int) -> str:
        return f"class {names[cls]}" if ints else f"class {names[cls]!r}"

    train = {labels[i] for i in indices["train"]}
    if len(train) == 1:
        (only,) = train
        raise DataError(
            f"{manifest}: the training split has one class only ({named(only)}); "
            "a classifier needs two at least"
        )
    for split in ("val", "test"):
        for cls in sorted({labels[i] for i in indices[split]} - train):
            raise DataError(
                f"{manifest}: {named(cls)} is in the {split} split but has no training sample"
            )


def check_shapes(manifest: Path, lines: list[int], rows: list[Row], name: str) -> ModalityFiles:
    """The shape most of ``name``'s files have, from their headers; the first file of
    another shape is an error naming its line. Also which files hold floating-point values."""
    headers = {}
    for line, row in zip(lines, rows, strict=True):
        path = row[name]
        if path is not None:
            try:
                headers[line] = read_header(path)
            except DataError as err:
                raise DataError(f"{manifest}: line {line}: {err}") from None
    if not headers:
        raise DataError(f"{manifest}: no row has a file for modality {name!r}")
    counts = Counter(header.shape for header in headers.values())
    shape = counts.most_common(1)[0][0]
    for line, row in zip(lines, rows, strict=True):
        header = headers.get(line)
        if header is not None and header.shape != shape:
            path = row[name]
            assert path is not None
            raise DataError(
                shape_message(f"{manifest}: line {line}", path, header.shape, name, shape)
            )
    return ModalityFiles(shape, {line for line, header in headers.items() if header.floating})


def check_distinct_files(manifest: Path, lines: list[int], rows: list[Row]) -> None:
    """No row names one file for two modalities (compared as files: ``a.npy``, a link to it
    and ``../data/a.npy`` are one): the first such row is an error naming its line, the
    two modalities and the file, and the lines of any other such rows."""
    found = [(line, shared_file(row)) for line, row in zip(lines, rows, strict=True)]
    shared = [(line, pair) for line, pair in found if pair is not None]
    if not shared:
        return
    (line, pair), more = shared[0], [other for other, _ in shared[1:]]
    also = ""
    if more:
        rows_do = "1 more row does" if len(more) == 1 else f"{len(more)} more rows do"
        also = f" ({rows_do} too: {some_lines(more)})"
    raise DataError(f"{manifest}: line {line}: {pair}; each modality needs its own file{also}")


def drop_nonfinite(
    manifest: Path, lines: list[int], rows: list[Row], floating: dict[str, set[int]]
) -> list[DroppedFile]:
    """``data.manifest.nonfinite=missing``: read every floating-point file once; one holding NaN or
    inf becomes a missing modality of its row (``rows`` changed in place). Returns those
    files, in manifest order."""
    dropped: list[DroppedFile] = []
    for line, row in zip(lines, rows, strict=True):
        for name, path in row.items():
            if path is None or line not in floating[name]:
                continue  # integer files and images hold finite values only
            if count_nonfinite(read_file(path, f"{manifest}: line {line}")):
                row[name] = None
                dropped.append(DroppedFile(f"{manifest}: line {line}", name, path))
        if all(path is None for path in row.values()):
            raise DataError(
                f"{manifest}: line {line}: no modality left, every file holds NaN or "
                "infinite values (data.manifest.nonfinite=missing)"
            )
    return dropped


def load_manifest(
    manifest: str | Path,
    modalities: list[str] | None,
    label_column: str = "label",
    split_column: str = "split",
    split_seed: int = 0,
    nonfinite: str = "error",
) -> DataBundle:
    """The manifest's splits (see the module docstring); every error names the manifest,
    and the line at fault where there is one."""
    manifest = Path(manifest)
    columns, records = read_records(manifest)
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

    lines = list(range(2, len(records) + 2))
    seen: dict[tuple[str, ...], int] = {}
    for line, record in zip(lines, records, strict=True):
        if None in record or None in record.values():  # csv: too many / too few fields
            raise DataError(
                f"{manifest}: line {line}: wrong number of fields (the header has {len(columns)})"
            )
        key = tuple(_same_file_key(manifest, record[name]) for name in modalities)
        if not any(key):
            raise DataError(
                f"{manifest}: line {line}: no file for any modality (a sample needs one at least)"
            )
        if key in seen:
            raise DataError(f"{manifest}: line {line} duplicates line {seen[key]}")
        seen[key] = line

    labels, class_names, ints = parse_labels(
        manifest, [record[label_column].strip() for record in records]
    )
    if split_column in columns:
        indices: dict[str, list[int]] = {s: [] for s in SPLITS}
        for line, record in zip(lines, records, strict=True):
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
    check_classes(manifest, labels, class_names, indices, ints)

    rows: list[Row] = [
        {name: cell_path(manifest, record[name]) for name in modalities} for record in records
    ]
    for line, row in zip(lines, rows, strict=True):  # fail before training, not in the middle
        for path in row.values():
            if path is not None and not path.is_file():
                raise DataError(f"{manifest}: line {line}: {not_a_file(path)}")
    check_distinct_files(manifest, lines, rows)
    found = {name: check_shapes(manifest, lines, rows, name) for name in modalities}
    shapes = {name: found[name].shape for name in modalities}
    dropped: list[DroppedFile] = []
    if nonfinite == "missing":
        floating = {name: found[name].floating for name in modalities}
        dropped = drop_nonfinite(manifest, lines, rows, floating)
    incomplete = any(path is None for row in rows for path in row.values())

    def subset(idx: list[int]) -> ManifestDataset:
        return ManifestDataset(
            manifest,
            [lines[i] for i in idx],
            [rows[i] for i in idx],
            [labels[i] for i in idx],
            shapes,
            incomplete,
        )

    return DataBundle(
        train=subset(indices["train"]),
        val=subset(indices["val"]),
        test=subset(indices["test"]),
        modalities=list(modalities),
        input_shapes=shapes,
        class_names=class_names,
        nonfinite_files=dropped,
    )


@dataclass
class ManifestSettings:
    """``data.manifest``: the CSV (one path column per modality, a label column and an
    optional split column; relative to the folder mmanet runs in, or absolute), the names
    of its label and split columns, and what a NaN / inf in an input file is: an "error"
    naming the file, or that modality is "missing" for its sample (the loader then reads
    every floating-point file up front)."""

    file: str | None = None
    label_column: str = "label"
    split_column: str = "split"
    nonfinite: Literal["error", "missing"] = "error"

    def __post_init__(self) -> None:
        if not self.label_column:
            raise ConfigError("data.manifest.label_column must not be empty")
        if self.label_column == self.split_column:
            raise ConfigError(
                f"data.manifest.label_column and data.manifest.split_column are both "
                f"{self.label_column!r}; name two different columns"
            )


@DATASETS.register("manifest", settings=ManifestSettings)
def build_manifest(cfg: DataConfig) -> DataBundle:
    """``data.name=manifest`` (inputs are read with the default reader, as the loader reads
    them)."""
    own = cfg.manifest
    if own.file is None:
        raise DataError("data.name=manifest needs data.manifest.file=<path to the CSV>")
    return load_manifest(
        own.file,
        cfg.modalities,
        own.label_column,
        own.split_column,
        cfg.split_seed,
        own.nonfinite,
    )
